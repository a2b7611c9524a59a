"""A keyword-spotting study end to end on a tiny Speech Commands folder."""

from __future__ import annotations

from audio_fixture import WORD_TONES_HZ, write_speech_commands

from qsearch.search import run_study


def test_kws_study_tc_res8_on_wav_folder(tmp_path):
    write_speech_commands(tmp_path)
    spec = {
        "name": "kws_tiny",
        "dataset": {
            "name": "speech_commands",
            "path": "speech_commands",
            "options": {"words": list(WORD_TONES_HZ)},
        },
        "model": {
            "name": "tc_res8",
            "qconfig": {
                "_target_": "speech_recognition.models.factory.qconfig.get_trax_qat_qconfig",
                "config": {"bw_b": 8, "bw_w": 6, "bw_f": 8, "power_of_2": False, "noise_prob": 0.7},
            },
        },
        "search_space": {
            "bw_w": None,
            "bw_f": None,
            "bw_b": None,
            "power_of_2": None,
            "noise_prob": None,
        },
        "sampler": {"name": "random"},
        "training": {"epochs": 1, "batch_size": 4},
        "n_trials": 1,
    }
    result = run_study(spec, storage=f"sqlite:///{tmp_path / 'kws.db'}", data_root=tmp_path)

    trial = result.trials[0]
    assert trial.state == "COMPLETE"
    assert trial.params == {}
    # TC-ResNet8 with 3 classes: 64,080 weights; 331 biases (16 in the stem,
    # the folded biases of nine conv-BN layers: 3 * (24 + 32 + 48), and 3 in
    # the classifier).
    assert trial.metrics["weights"] == 64_080
    assert trial.metrics["parameters"] == 64_411
    # The float model's batch norms are separate layers, so only the stem and
    # classifier biases count there.
    assert result.baseline["parameters"] == 64_080 + 19
