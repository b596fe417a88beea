"""Pseudo-names for clusters: whole lowercase words, semantically unrelated to what images show.

The shipped list holds abstract words (qualities, feelings, ideas) rather than things one can
photograph, so a name carries no hint of a cluster's content. A word is usable with an LM when
its tokenizer writes it in 1-3 tokens and reads it back unchanged; the evaluation set's class
names are always excluded.
"""

from __future__ import annotations

import random
import re
from typing import Any, Iterable, Sequence

from vidssl.errors import VidsslError

SHIPPED_WORDS: tuple[str, ...] = tuple("""
ambition anxiety apathy arrogance audacity authority autonomy bravery brevity candor caution
charity chastity clarity comfort compassion conceit confidence conscience consent courage
courtesy credulity cruelty curiosity cynicism decency defiance delight denial despair destiny
devotion dignity diligence discretion disdain dismay doubt duty eloquence empathy endurance
envy equity essence ethics excess faith fallacy fame fantasy fatigue fervor fidelity folly
fortune freedom frenzy futility glory gossip gratitude greed grief guilt habit harmony hatred
heresy honesty honor hope hubris humility humor hunger idleness illusion impulse indolence
infancy insight integrity intent irony jealousy jeopardy justice karma kindness knowledge
laughter legacy leisure liberty logic loyalty lunacy luxury madness malice mercy merit
misery modesty morale motive mystery naivety neglect nostalgia notion oblivion omen optimism
outrage pardon passion patience peril piety pity pledge poverty praise prejudice pride
privacy prosperity prudence purity quandary rapport reason regret relief remorse renown
respect revenge rigor rumor sanity scandal scorn secrecy serenity shame sincerity solitude
sorrow spite stamina stigma subtlety success suspicion sympathy temper tenacity theory
thrift tolerance tranquility treason triumph trust truth tyranny union unrest valor vanity
vengeance verdict vigor virtue wisdom wonder worry wrath youth zeal absence advice agony
alibi amnesty anarchy anguish apology appetite ardor asylum aura avarice banter bliss
boredom bounty candour chaos chance charm clemency concept conduct consensus contempt
context credit crisis custom debt deceit decorum delay demise desire dilemma dogma dread
ego elegance ennui epoch esteem ethos fable fairness favor fear felony fiasco finesse
flair folklore fury gist grace grudge guile hazard heed hindsight homage hostility hygiene
idiom impact incentive inertia influence insult intuition irk jest jubilee kinship lament
lapse lore lust malaise mandate menace mercy mirth morality myth nerve nuance oath
""".split())


def normalize_name(text: str) -> str:
    """The form two names are compared in: lowercase, '_'/'-' as spaces, no punctuation, no leading
    article, single spaces ("Gray_Kingbird." -> "gray kingbird")."""
    text = text.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"[^\w\s]", " ", text)
    words = text.split()
    if len(words) > 1 and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def class_name(folder: str) -> str:
    """An ImageFolder class folder as the name a caption uses ("gray_kingbird" -> "gray kingbird")."""
    return normalize_name(folder)


def piece_tokens(tokenizer: Any, piece: str, anchor: str = "a") -> list[int]:
    """The tokens `piece` takes when it follows other text, without special tokens.

    Tokenized after an `anchor` word, whose tokens are then dropped: SentencePiece tokenizers
    (Llama) put a word-start marker on the first piece of a string, so tokenizing " gray" alone
    gives a doubled space that never occurs inside a caption. When the anchor's tokens are not a
    prefix (the two merged), the piece is tokenized alone."""
    alone = list(tokenizer(piece, add_special_tokens=False)["input_ids"])
    head = list(tokenizer(anchor, add_special_tokens=False)["input_ids"])
    both = list(tokenizer(anchor + piece, add_special_tokens=False)["input_ids"])
    if both[: len(head)] == head and len(both) > len(head):
        return both[len(head):]
    return alone


def name_tokens(tokenizer: Any, name: str) -> list[int]:
    """The tokens a name takes inside a caption: after " This is a", led by a space."""
    return piece_tokens(tokenizer, " " + name)


def usable(tokenizer: Any, word: str, max_tokens: int = 3) -> bool:
    """1..max_tokens tokens, no unknown token, and decoding gives the word back."""
    ids = name_tokens(tokenizer, word)
    unk = getattr(tokenizer, "unk_token_id", None)
    if not 1 <= len(ids) <= max_tokens or (unk is not None and unk in ids):
        return False
    return normalize_name(tokenizer.decode(ids)) == word


def tokenizer_words(tokenizer: Any, min_len: int = 4, max_len: int = 10) -> list[str]:
    """Whole lowercase alphabetic words that are single tokens of the tokenizer (sorted, so the
    draw depends on the seed only). Not guaranteed unrelated to image content: a fallback."""
    found = set()
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip()
        if min_len <= len(text) <= max_len and text.isascii() and text.isalpha() and text.islower():
            found.add(text)
    return sorted(found)


def banned_names(exclude: Iterable[str]) -> set[str]:
    """Normalised evaluation names and each of their words: "gray kingbird" bans "kingbird" too, so
    a pseudo-name is never part of an answer that could be right. The caption's words are banned
    too."""
    banned: set[str] = {"this", "is", "a"}  # the caption's own words ("This is a this.")
    for e in exclude:
        name = normalize_name(e)
        banned.add(name)
        banned.update(w for w in name.split() if w not in ("a", "an", "the", "of", "and"))
    return banned


def draw_pseudo_names(
    k: int, tokenizer: Any, *, exclude: Iterable[str] = (), seed: int = 0,
    words: Sequence[str] | None = None, allow_tokenizer_words: bool = True,
) -> list[str]:
    """`k` distinct pseudo-names: from `words` (default the shipped list) that the tokenizer writes
    in 1-3 tokens, then, when those run short and `allow_tokenizer_words`, from the tokenizer's own
    whole-word tokens. Nothing in `exclude`, nor any word of a name there, is ever drawn
    (`banned_names`)."""
    banned = banned_names(exclude)
    pool = [w for w in dict.fromkeys(words if words is not None else SHIPPED_WORDS)
            if normalize_name(w) not in banned and usable(tokenizer, w)]
    rng = random.Random(seed)
    rng.shuffle(pool)
    if len(pool) < k and allow_tokenizer_words:
        taken = set(pool)
        extra = [w for w in tokenizer_words(tokenizer) if w not in banned and w not in taken and usable(tokenizer, w)]
        rng.shuffle(extra)
        pool += extra
    if len(pool) < k:
        raise VidsslError(f"only {len(pool)} usable pseudo-names for K={k} clusters (1-3 tokens of this tokenizer, "
                          "not an evaluation class name); lower --clusters")
    return pool[:k]
