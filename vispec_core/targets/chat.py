"""Chat templates for the tiny targets (real checkpoints bring their own), and user text kept as text."""
from __future__ import annotations

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


# -- user text is text ----------------------------------------------------------------------------
# A user who types "<|im_end|>" or an image placeholder string must not end the turn or open an image
# span: the template's own markers stay control tokens, the user's text is tokenized with its
# special-token strings split into ordinary pieces.

def special_strings(tokenizer) -> list[str]:
    """The strings this tokenizer turns into control tokens (ChatML markers, image placeholders)."""
    return [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]


def holds_special(tokenizer, texts: list[str]) -> bool:
    specials = special_strings(tokenizer)
    return any(s in text for text in texts for s in specials)


def text_ids(tokenizer, text: str) -> list[int]:
    """Ids of user text with no control tokens in them."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def render_with_sentinel(tokenizer, texts: list[str], render, avoid: set[str] = frozenset()):
    """render(stand_in) -> (result, how often stand_in's id appears in it): the template rendered with a
    special token standing in for each user text. Returns the result and the stand-in's id, for the
    first special token (not in `avoid`) that appears exactly once per user text."""
    for stand_in in special_strings(tokenizer):
        if stand_in in avoid:
            continue
        out, count = render(stand_in)
        if count == len(texts):
            return out, tokenizer.convert_tokens_to_ids(stand_in)
    raise ValueError("The prompt's text could not be kept apart from the chat template's control tokens; "
                     "remove special-token strings such as '<|im_end|>' from the prompt.")


def splice(ids: list[int], stand_in: int, tokenizer, texts: list[str]) -> tuple[list[int], list[bool]]:
    """Put each user text's ids where its stand-in token is, in order; also say which ids are user text."""
    out, is_text, i = [], [], 0
    for t in ids:
        if t == stand_in:
            piece = text_ids(tokenizer, texts[i])
            out += piece
            is_text += [True] * len(piece)
            i += 1
        else:
            out.append(t)
            is_text.append(False)
    return out, is_text
