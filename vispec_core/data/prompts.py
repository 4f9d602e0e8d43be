"""Every prompt string in one home: the paper's prompts, the rewrites that ask for long answers, the
stage-1 instruction set, the benchmark's task prompts, the projector build's prompts; and the seeds
that keep the benchmark's prompts out of training."""

# The paper's generation prompt (Sec. 7) and its inference prompts for VQA and captioning.
LONG_ANSWER = "Please answer with at least 1000 words."
EXPLAIN = "Please answer with an explanation."
CAPTION = "Provide a detailed description of the given image."
OCR_PROMPT = ("Perform an OCR task on the provided image. Extract the text accurately and provide a detailed "
              "explanation of the process. Ensure the response is comprehensive and well-structured.")

HELD_OUT_SCENE_SEED = 1_000_000      # benchmark scenes use seeds >= this; training uses seeds below
TARGET_CHECK_SCENE_SEED = 3_000_000  # the default target's own checks (evaluation/target_checks.py)
CALIBRATION_OFFSET = 1_000           # the tree search's prompts start here in each task's sequence

# -- text-only instructions (stage 1): topics x instruction forms x long-answer suffixes -------------
TOPICS = (
    "photosynthesis", "the water cycle", "black holes", "the French Revolution", "machine learning",
    "climate change", "the human immune system", "volcanoes", "the stock market", "renewable energy",
    "the Roman Empire", "plate tectonics", "vaccines", "the internet", "honeybees", "coral reefs",
    "the theory of evolution", "quantum computing", "the printing press", "electric cars", "sleep",
    "the Moon landing", "inflation", "rainforests", "the periodic table", "chess", "jazz music",
    "the Great Wall of China", "bread baking", "recycling", "earthquakes", "the solar system",
    "public libraries", "bicycles", "ocean tides", "the Renaissance", "gardening", "friendship",
    "learning a new language", "time management", "the pyramids of Giza", "antibiotics", "cloud computing",
    "marathon running", "the history of writing", "rain", "mountains", "democracy", "coffee",
    "the Industrial Revolution", "dinosaurs", "social media", "the human brain", "electricity",
    "origami", "deserts", "weather forecasting", "the Olympic Games", "space telescopes", "money",
)
FORMS = (
    "Explain {topic} to a curious teenager.", "What is {topic} and why does it matter?",
    "Write an essay about {topic}.", "Describe the history of {topic}.",
    "What are the advantages and disadvantages of {topic}?", "Write a short story that involves {topic}.",
    "Give a step-by-step introduction to {topic} for a complete beginner.",
    "What are the most common misconceptions about {topic}?", "Compare {topic} with {other}.",
    "Write a letter to a friend about {topic}.", "How would you teach {topic} to a class of children?",
    "What does the future of {topic} look like?", "Summarise what scientists and historians know about {topic}.",
    "Write a dialogue between two people discussing {topic}.", "List ten interesting facts about {topic} and explain each.",
    "How is {topic} connected to everyday life?", "Write a blog post titled 'Everything you should know about {topic}'.",
    "What questions about {topic} remain open, and why?", "Explain how {topic} and {other} are related.",
    "Write a poem about {topic}, then explain its imagery.",
)
SUFFIXES = (LONG_ANSWER, EXPLAIN, "")

# -- the benchmark's photo and text tasks -----------------------------------------------------------
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field", "immunohistochemistry",
          "retina", "coins", "moon", "horse", "colorwheel", "clock", "cell", "brick", "page")
PHOTO_PROMPTS = (CAPTION, f"What is the main subject of this photo? {EXPLAIN}",
                 f"Which colors, objects and textures can be seen in this image? {EXPLAIN}")
TEXT_TOPICS = ("a bicycle's gears", "photosynthesis", "a refrigerator", "the water cycle", "a compiler",
               "vaccines", "tides", "a hash table", "rainbows", "the stock market", "volcanoes", "a transistor",
               "bread baking", "glaciers", "an electric motor", "bird migration", "a lighthouse", "recycling",
               "solar panels", "a steam engine")
TEXT_TEMPLATES = ("Explain how {} works. {}", "Describe the history and importance of {}. {}",
                  "What are the most common misconceptions about {}? {}")

# -- the default VLM's projector build --------------------------------------------------------------
LONG_PROMPTS = (CAPTION, "Describe this image in detail.")
# LLaVA-1.5's device for mixing short VQA with long answers: the short questions carry an explicit
# instruction, so the frozen LM learns terseness only when asked for it and stays verbose otherwise.
SHORT = " Answer in one short sentence."
COLORS_QUESTION = "What colors are the shapes in the image?"

# -- the default VLM's instruction data (data/instructions.py); none is a benchmark prompt -------------
DETAIL_PROMPTS = (
    "Describe this image in detail.", "What do you see in this picture? Describe everything.",
    "Give a thorough description of this image.", "Can you describe the image for me?",
    "Tell me about this picture in as much detail as you can.", "Write a detailed caption for this image.",
    "Describe the contents of this image, including colors and positions.",
    "Explain what this image shows.", "Please describe the picture above.",
    "Walk me through everything that appears in this image.", "What is in this image? Be specific.",
    "Describe the scene, the objects in it and where they are.", "Write a paragraph describing this image.",
    "Imagine you are describing this image to someone who cannot see it. What would you say?",
    "Analyze the image in detail.", "Describe the layout and the objects of this image.",
)
DETAIL_SUFFIXES = ("", "", "", " " + LONG_ANSWER, " Be as detailed as possible.", " Please be thorough.")
QUESTION_SUFFIXES = (" Explain your answer.", " Why?", " Give your reasoning.", " Please explain.", "")
BRIEF_SUFFIXES = (SHORT, " Answer briefly.", " Reply with one sentence.")
