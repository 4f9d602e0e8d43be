"""Chat templates for the tiny targets (real checkpoints bring their own)."""

# ChatML, with each image item rendered as the family's image marker
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}IMAGE_MARKER{% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_chat_template(image_marker: str) -> str:
    return TINY_CHAT_TEMPLATE.replace("IMAGE_MARKER", image_marker)
