"""The corpus caption map (examples/corpus/captions.json + phrasings.json) is consistent.

The corpus script is an example, not part of the package, so it is loaded from its path.
"""

from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus"




@pytest.fixture(scope="module")
def rules(build_corpus):
    phrasings = build_corpus.load_phrasings(CORPUS / "phrasings.json")
    return build_corpus.load_rules(CORPUS / "captions.json", phrasings)


def test_every_caption_has_other_phrasings(rules):
    # the model card promises two or three hand-written phrasings per caption; a caption
    # without them would be trained on one wording only
    bare = sorted({r.captions[0] for spec in rules.values() for r in spec["rules"]
                   if not r.skip and len(r.captions) < 3})
    assert bare == []


def test_no_phrasing_is_another_captions_label(rules):
    # a phrasing equal to another class's label would make the two classes one query
    labels = {r.captions[0] for spec in rules.values() for r in spec["rules"] if not r.skip}
    clashes = sorted({p for spec in rules.values() for r in spec["rules"] for p in r.captions[1:]
                      if p in labels and p != r.captions[0]})
    assert clashes == []


@pytest.mark.parametrize("path, label", [
    ("animals/mammals/bovines/cow_white.ogg", "a cow moos"),
    ("animals/mammals/bovines/sheep_lamb.ogg", "a sheep bleats"),
    ("animals/mammals/pig_golden2.ogg", "a pig oinks"),
    ("household/Washing-machine.ogg", "a washing machine running"),
    ("vehicles/emergency/firetruck.ogg", "a siren wailing"),
    # the spoken descriptions, letters and unclear stamps are not taken
    ("animals/mammals/bovines/cow_desc_fr.ogg", None),
    ("symbols/math/7_en_GB.ogg", None),
    ("animals/mammals/dogs/fox.ogg", None),
])
def test_tuxpaint_stamp_sounds_get_the_right_caption(build_corpus, rules, path, label):
    rule = build_corpus.match_rule(rules["tuxpaint-stamps-default"]["rules"],
                                   "usr/share/tuxpaint/stamps/" + path)
    assert (rule.captions[0] if rule else None) == label


@pytest.fixture(scope="module")
def effect_rules(build_corpus):
    phrasings = build_corpus.load_phrasings(CORPUS / "phrasings.json")
    return build_corpus.load_rules(CORPUS / "sound_effects.json", phrasings)


def test_sound_effect_classes_are_unlike_every_corpus_caption(rules, effect_rules):
    # sound_effects.json adds classes the validation set must not contain: none of its
    # captions or phrasings may be a corpus caption or phrasing, or an effect clip would
    # train a validation query
    corpus = {c for spec in rules.values() for r in spec["rules"] for c in r.captions}
    effects = {c for spec in effect_rules.values() for r in spec["rules"] for c in r.captions}
    assert len(effects) >= 14 and corpus & effects == set()
    assert all(len(r.captions) >= 3 for spec in effect_rules.values() for r in spec["rules"])


@pytest.mark.parametrize("package, path, label", [
    ("redeclipse-data", "usr/share/games/redeclipse/data/sounds/weapons/pistol/primary2.ogg",
     "a gunshot"),
    ("redeclipse-data", "usr/share/games/redeclipse/data/sounds/weapons/zapper/secondary.ogg",
     "a laser gun firing"),
    ("sonic-pi-samples", "usr/share/sonic-pi/samples/elec_blip2.flac", "an electronic beep"),
    ("supertux-data", "usr/share/games/supertux2/sounds/coin.wav", "a video game power-up sound"),
    # what a corpus caption describes stays out: rockets and mines explode, voices speak,
    # sonic-pi's glass hum is a rubbed glass rim
    ("redeclipse-data", "usr/share/games/redeclipse/data/sounds/weapons/rocket/primary.ogg", None),
    ("redeclipse-data", "usr/share/games/redeclipse/data/sounds/weapons/mine/explode.ogg", None),
    ("redeclipse-data", "usr/share/games/redeclipse/data/sounds/voice/yes.ogg", None),
    ("sonic-pi-samples", "usr/share/sonic-pi/samples/ambi_glass_hum.flac", None),
])
def test_sound_effect_rules_take_only_what_no_caption_describes(build_corpus, rules, effect_rules,
                                                               package, path, label):
    rule = build_corpus.match_rule(effect_rules[package]["rules"], path)
    assert (rule.captions[0] if rule else None) == label
    if label:  # never also a corpus clip
        assert build_corpus.match_rule(rules[package]["rules"], path) is None
