"""The one block configuration: its weights-file form and what older files lacked."""

import json

import pytest

from vrwkv_editor.vrwkv.config import DEFAULT, PAPER, BlockConfig


@pytest.mark.parametrize("config", [PAPER, DEFAULT,
                                    BlockConfig("mid", 1, 1, 0.5, True, "merge", True, 1, "first+previous", 0.4, "repeat",
                                                0.2)])
def test_spec_round_trip_through_json(config):
    assert BlockConfig.from_spec(json.loads(json.dumps(config.to_spec()))) == config


def test_a_spec_saved_before_the_options_is_the_paper_block_where_it_was_placed():
    old = {"placement": "skip", "min_level": 1, "hidden_ratio": 2, "blocks": {}}
    assert BlockConfig.from_spec(old) == PAPER.replace(placement="skip", min_level=1, channel_mix=2)


def test_the_spec_keys_are_those_files_have_always_used():
    assert set(PAPER.to_spec()) == {"placement", "min_level", "hidden_ratio", "rank_ratio", "fused_mix",
                                    "skip_fusion", "sample_in_unet_dtype", "channel_mix_max_level", "frame_attention", "end_percent",
                                    "channel_mix_pad", "edit_end_percent"}


@pytest.mark.parametrize("bad,message", [({"placement": "everywhere"}, "placement must be one of"),
                                         ({"min_level": -1}, "min_level must be an integer"),
                                         ({"channel_mix": -1}, "channel_mix must be >= 0"),
                                         ({"rank": 0}, r"rank must be in \(0, 1\]"),
                                         ({"skip_fusion": "concat"}, "skip_fusion must be one of"),
                                         ({"channel_mix_max_level": -1}, "channel_mix_max_level must be"),
                                         ({"frame_attention": "all"}, "frame_attention must be one of"),
                                         ({"end_percent": 0}, r"end_percent must be in \(0, 1\]"),
                                         ({"channel_mix_pad": "reflect"}, "channel_mix_pad must be one of"),
                                         ({"edit_end_percent": 1.5}, r"edit_end_percent must be in \(0, 1\]")])
def test_bad_values_are_refused_with_the_range(bad, message):
    with pytest.raises(ValueError, match=message):
        BlockConfig(**bad)


def test_channel_mix_max_level_drops_the_channel_mix_above_it():
    config = PAPER.replace(channel_mix_max_level=1)
    assert config.at_level(0) == config.at_level(1) == config
    assert config.at_level(2) == config.replace(channel_mix=0)
    assert PAPER.at_level(5) == PAPER


def test_edits_end_where_edit_end_percent_says_or_with_the_rest():
    assert PAPER.replace(end_percent=0.5, edit_end_percent=0.3).end(edit=True) == 0.3
    assert PAPER.replace(end_percent=0.5, edit_end_percent=0.3).end(edit=False) == 0.5
    assert PAPER.replace(end_percent=0.5).end(edit=True) == 0.5
