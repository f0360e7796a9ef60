"""Settings: read once from the environment, typed, validated, with older names kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processing.config import Settings, SettingsError


def test_settings_from_env_parses_types():
    s = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "MAX_FACES": "3",
                           "STANDIN_WEIGHTS": "yes", "CORS_ORIGINS": "https://a.example, https://b.example",
                           "JOB_RETENTION_HOURS": "0.5", "WEIGHTS_DIR": "/opt/weights"})
    assert s.max_faces == 3 and s.standin_weights is True and s.retention_hours == 0.5
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.weights_dir == Path("/opt/weights") and s.poison_queue == "restore-jobs-poison"


@pytest.mark.parametrize("env, word", [({"MAX_FACES": "many"}, "MAX_FACES"), ({"STANDIN_WEIGHTS": "maybe"}, "STANDIN_WEIGHTS"),
                                       ({"MAX_UPLOAD_BYTES": "0"}, "MAX_UPLOAD_BYTES")])
def test_bad_settings_name_the_variable(env, word):
    with pytest.raises(SettingsError, match=word):
        Settings.from_env(env)


def test_host_json_matches_the_worker_settings():
    queues = json.load(open(Path(__file__).resolve().parents[2] / "host.json"))["extensions"]["queues"]
    assert queues["batchSize"] == 1 and queues["newBatchThreshold"] == 0  # one job at a time per instance
    assert queues["maxDequeueCount"] == Settings().max_dequeue_count


def test_older_setting_names_still_work_and_the_new_ones_win():
    old = Settings.from_env({"TORCH_THREADS": "3", "ONNX_CACHE_DIR": "/old/models"})
    assert old.engine_threads == 3 and old.models_dir == Path("/old/models")
    both = Settings.from_env({"TORCH_THREADS": "3", "ENGINE_THREADS": "1", "ONNX_CACHE_DIR": "/old", "MODELS_DIR": "/new"})
    assert both.engine_threads == 1 and both.models_dir == Path("/new")


def test_models_dir_defaults_to_the_export_beside_the_checkpoints():
    assert Settings.from_env({"WEIGHTS_DIR": "/opt/weights"}).models_dir == Path("/opt/weights/onnx")
