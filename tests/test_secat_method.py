"""SeCAt's parts on a tiny LM built from a config: pseudo-names, episode sampling, the token layout
of interleaved sequences, the caption-only loss and the scoring of open-ended answers."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from test_secat_fixtures import CLASS_COLOURS, PSEUDO_VOCAB, write_tiny_lm
from vidssl.errors import VidsslError
from vidssl.secat.episodes import IGNORE, Episode, EpisodeSampler, LayoutBuilder, collate, episode_rng
from vidssl.secat.evaluate import is_correct, name_in, sample_episodes, score_episodes
from vidssl.secat.mapper import FeatureMapper, caption_loss, embed_sequence
from vidssl.secat.names import class_name, draw_pseudo_names, normalize_name, usable

transformers = pytest.importorskip("transformers")

EVAL_NAMES = [class_name(c) for c in CLASS_COLOURS]  # "red square", "blue sky", ...


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from vidssl.secat.lm import load_lm

    return load_lm(write_tiny_lm(tmp_path_factory.mktemp("lm") / "lm"))


def test_pseudo_names_are_k_tokenizable_words_and_never_an_eval_name(tiny) -> None:
    _, tok = tiny
    # a word list that holds eval names and words of them: "sky" alone must be banned as well
    words = ["red square", "sky", "plum", "notaword", *PSEUDO_VOCAB[:5]]
    names = draw_pseudo_names(4, tok, exclude=EVAL_NAMES, seed=3, words=words, allow_tokenizer_words=False)
    assert len(names) == len(set(names)) == 4
    assert set(names) <= set(PSEUDO_VOCAB[:5])  # "notaword" is [UNK] for this tokenizer
    assert all(usable(tok, n) for n in names)
    # the shipped list, K larger than it is here: topped up from the tokenizer's own words, never eval ones
    banned = set(EVAL_NAMES) | {w for n in EVAL_NAMES for w in n.split()}
    many = draw_pseudo_names(60, tok, exclude=EVAL_NAMES, seed=0)
    assert len(set(many)) == 60 and not set(many) & (banned | {"this", "is", "a"})
    assert draw_pseudo_names(8, tok, exclude=EVAL_NAMES, seed=1) == draw_pseudo_names(8, tok, exclude=EVAL_NAMES, seed=1)
    with pytest.raises(VidsslError, match="lower --clusters"):
        draw_pseudo_names(61, tok, exclude=EVAL_NAMES)  # 60 words + "this", a caption word


def test_normalisation_of_names_and_answers() -> None:
    assert normalize_name("The Gray_Kingbird.") == "gray kingbird" == class_name("gray_kingbird")
    assert is_correct(" a red-square", "red square") and not is_correct("red squares", "red square")
    assert name_in("it is a red square, surely", "red square") and not name_in("infrared squares", "red square")


def test_sampler_draws_n_way_k_shot_episodes() -> None:
    classes = [c for c in range(6) for _ in range(4)]
    names = ["agony", "alibi", "advice", "absence", "valor", "pity"]
    for binding in ("class", "episode"):
        sampler = EpisodeSampler(classes, names, binding=binding)
        for i in range(50):
            e = sampler.sample(3, 2, episode_rng(0, i))
            assert len(e.support) == 6 and e.query not in e.support and len(set(e.images)) == 7
            assert sorted(set(e.support_classes)) == sorted(set(e.support_classes)) and len(set(e.support_classes)) == 3
            assert all(e.support_classes.count(c) == 2 for c in set(e.support_classes))
            assert all(classes[i] == c for i, c in zip(e.support, e.support_classes)) and classes[e.query] == e.query_class
            name_of = dict(zip(e.support_classes, e.support_names))  # one name per class within an episode
            assert len(set(name_of.values())) == 3 and name_of[e.query_class] == e.query_name
            assert all(name_of[c] == n for c, n in zip(e.support_classes, e.support_names))
            if binding == "class":
                assert all(names[c] == n for c, n in name_of.items())
    assert EpisodeSampler(classes, names).sample(2, 1, episode_rng(5, 1)) == \
        EpisodeSampler(classes, names).sample(2, 1, episode_rng(5, 1))
    with pytest.raises(VidsslError, match="needs 7 classes"):
        EpisodeSampler(classes, names).sample(7, 1, random.Random(0))
    with pytest.raises(VidsslError, match="at least 5 images"):
        EpisodeSampler(classes, names).sample(2, 4, random.Random(0))


def expected_layout(tok, support_names, query_name, m):
    """The sequence written out by hand: BOS, then per image m slots and 'this is a NAME .'."""
    v = tok.convert_tokens_to_ids
    ids, slot, labels = [tok.bos_token_id], [-1], [IGNORE]
    for j, name in enumerate([*support_names, query_name]):
        ids += [tok.pad_token_id] * m
        slot += [j * m + t for t in range(m)]
        labels += [IGNORE] * m
        words = ["this", "is", "a"] + name.split() + ["."]
        if j == len(support_names):  # the query: only its name and '.' are targets
            ids += v(words)
            slot += [-1] * len(words)
            labels += [IGNORE] * 3 + v(words[3:])
        else:
            ids += v(words)
            slot += [-1] * len(words)
            labels += [IGNORE] * len(words)
    return ids, slot, labels


def test_layout_interleaves_image_slots_and_captions(tiny) -> None:
    _, tok = tiny
    builder = LayoutBuilder(tok, image_tokens=3)
    support = ["agony", "blue sky", "agony"]
    layout = builder.build(support, "blue sky")
    ids, slot, labels = expected_layout(tok, support, "blue sky", 3)
    assert layout.ids.tolist() == ids and layout.slot.tolist() == slot and layout.labels.tolist() == labels
    # the generation prompt stops right after the query's "this is a"
    prompt = builder.build(support, None)
    assert prompt.ids.tolist() == ids[: len(ids) - 3] and (prompt.labels == IGNORE).all()
    # batching: right padding, image rows offset by the earlier sequences' images
    short = builder.build(["alibi"], "alibi")
    batch = collate([layout, short], [4, 2], 3, builder.pad_id)
    assert batch["ids"].shape == (2, len(ids))
    L2 = len(short.ids)
    assert batch["slot"][1, :L2].tolist() == [s + 12 if s >= 0 else -1 for s in short.slot.tolist()]
    assert (batch["slot"][1, L2:] == -1).all() and (batch["labels"][1, L2:] == IGNORE).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(ids), L2]


def test_layout_pieces_read_as_the_running_text_with_a_sentencepiece_tokenizer() -> None:
    """Metaspace (Llama-style) tokenizers mark word starts; a '.' tokenized on its own becomes '▁.'
    (here: unknown). Each piece must get the tokens it has inside the whole caption text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", "<pad>", "▁This", "▁is", "▁a", "▁gray", "▁king", "bird",
                                         "▁agony", "."])}
    core = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix=""))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>",
                                               pad_token="<pad>")
    layout = LayoutBuilder(tok, image_tokens=1).build(["gray kingbird", "agony"], "agony")
    text_ids = [i for i, s in zip(layout.ids.tolist(), layout.slot.tolist()) if s < 0]
    whole = tok("This is a gray kingbird. This is a agony. This is a agony.", add_special_tokens=False)["input_ids"]
    assert text_ids == whole and tok.unk_token_id not in text_ids
    assert usable(tok, "gray kingbird") and not usable(tok, "sparrow")


def test_embeddings_put_mapped_images_in_their_slots(tiny) -> None:
    lm, tok = tiny
    builder = LayoutBuilder(tok, image_tokens=2)
    batch = collate([builder.build(["agony"], "agony"), builder.build(["alibi", "advice"], "advice")], [2, 3], 2,
                    builder.pad_id)
    torch.manual_seed(0)
    mapper = FeatureMapper(10, 64, 2)
    feats = torch.randn(5, 10)
    embeds = embed_sequence(lm, mapper, batch["ids"], batch["slot"], feats)
    rows = mapper(feats).reshape(10, 64)
    words = lm.get_input_embeddings()(batch["ids"])
    for b in range(2):
        for p in range(batch["ids"].shape[1]):
            s = int(batch["slot"][b, p])
            torch.testing.assert_close(embeds[b, p], rows[s] if s >= 0 else words[b, p])
    # sequence 1's images are rows 4..9: features 2, 3 (support) and 4 (query)
    assert batch["slot"][1][batch["slot"][1] >= 0].tolist() == list(range(4, 10))


def test_loss_sees_only_the_query_caption(tiny) -> None:
    lm, tok = tiny
    builder = LayoutBuilder(tok, image_tokens=2)
    layouts = [builder.build(["agony", "alibi"], "alibi"), builder.build(["advice", "blue sky", "absence"], "blue sky")]
    batch = collate(layouts, [3, 4], 2, builder.pad_id)
    torch.manual_seed(0)
    logits = torch.randn(*batch["ids"].shape, len(tok), requires_grad=True)
    loss = caption_loss(logits, batch["labels"])
    # independently: the query's caption words (name and '.') are the last tokens of each sequence,
    # each predicted from the position before it
    terms = []
    for b, layout in enumerate(layouts):
        n_target = len(tok(" " + ("alibi" if b == 0 else "blue sky") + ".", add_special_tokens=False)["input_ids"])
        L = len(layout.ids)
        for p in range(L - n_target, L):
            target = int(batch["ids"][b, p])
            terms.append(torch.logsumexp(logits[b, p - 1], 0) - logits[b, p - 1, target])
    assert len(terms) == 2 + 3
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    loss.backward()
    touched = (logits.grad.abs().sum(-1) > 0).nonzero().tolist()
    expected = [[b, p - 1] for b, layout in enumerate(layouts) for p in range(len(layout.ids))
                if int(layout.labels[p]) != IGNORE]
    assert touched == expected
    # the same through the LM: image and support positions only reach the loss through attention
    with torch.no_grad():
        real = caption_loss(lm(input_ids=batch["ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
    assert math.isfinite(float(real)) and float(real) > 0


def oracle(e: Episode) -> str:
    return e.support_names[e.support_classes.index(e.query_class)]


def test_scoring_of_scripted_generators_is_exact() -> None:
    classes = [c for c in range(8) for _ in range(6)]
    names = EVAL_NAMES + ["gray kingbird", "sea otter"]
    for ways, shots in ((2, 1), (5, 1), (5, 5)):
        eps = sample_episodes(classes, names, ways, shots, 2000, seed=1)
        assert {e.query_name for e in eps} <= set(names)
        perfect = score_episodes(eps, lambda e: "The " + oracle(e).replace(" ", "_") + ".")
        assert perfect["accuracy"] == 100.0 and perfect["name_in_output"] == 100.0 and perfect["n"] == 2000
        first = score_episodes(eps, lambda e: e.support_names[0])
        expected = sum(e.support_classes[0] == e.query_class for e in eps) / 20.0  # exact count, in %
        assert first["accuracy"] == pytest.approx(expected)
        sigma = 100 * math.sqrt((1 / ways) * (1 - 1 / ways) / 2000)
        assert abs(first["accuracy"] - 100 / ways) < 4 * sigma  # 1/N in expectation: the support is shuffled
        wordy = score_episodes(eps, lambda e: f"photo of a {oracle(e)} here")
        assert wordy["accuracy"] == 0.0 and wordy["name_in_output"] == 100.0
    assert sample_episodes(classes, names, 5, 1, 10, seed=2) == sample_episodes(classes, names, 5, 1, 10, seed=2)
