"""A campaign spread out (docs/guide/scale-out.md): ``evaluate(..., executor=, shards=)`` on a
real Dask ``LocalCluster`` and on a ``ProcessPoolExecutor`` merges into the single-process
report; ``merge`` names a missing shard and what differs between campaigns; ``shard="auto"``
reads the scheduler's variables; and the Kubernetes and CI examples (docs/examples/) run here,
their commands on the fixtures, merging into the single-process report.
"""

import concurrent.futures
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import distributed
import numpy as np
import onnx
import pytest
import yaml

import fitact_onnx

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
MODEL = FIXTURES / "alexnet.onnx"
EXAMPLES = ROOT / "docs" / "examples"
VENV_BIN = Path(sys.executable).parent
TEST = np.load(FIXTURES / "test.npy")[:16]
TEST_LABELS = np.load(FIXTURES / "test_labels.npy")[:16]
# 4 trials at 2 BERs, over 4 shards: one trial per shard and BER.
CAMPAIGN = dict(ber=[1e-5, 1e-4], trials=4, seed=3, batch_size=16, quiet=True)
SCHEDULER_VARS = ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT",
                  "SLURM_ARRAY_TASK_STEP", "JOB_COMPLETION_INDEX", "FITACT_SHARD_INDEX", "FITACT_SHARD_COUNT"]


@pytest.fixture(autouse=True)
def no_scheduler(monkeypatch):
    for var in SCHEDULER_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def models():
    return [onnx.load(MODEL)]


@pytest.fixture(scope="module")
def single(models):
    return fitact_onnx.evaluate(models, data=TEST, labels=TEST_LABELS, **CAMPAIGN)


def test_a_dask_local_cluster_runs_the_shards_and_they_merge_into_the_single_process_report(
        models, single, tmp_path, monkeypatch):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        scattered = []
        scatter = client.scatter
        monkeypatch.setattr(client, "scatter", lambda *a, **k: scattered.append(k) or scatter(*a, **k))
        with distributed.get_task_stream(client) as tasks:
            merged = fitact_onnx.evaluate(models, data=TEST, labels=TEST_LABELS, executor=client.get_executor(),
                                          shards=4, report=tmp_path / "merged.json", **CAMPAIGN)
    # The models and arrays went to the workers once, by scatter, broadcast to both; the
    # shards ran as 4 tasks.
    assert scattered == [dict(broadcast=True, hash=False)]
    assert sum(t["key"].startswith("_run_shard") for t in tasks.data) == 4, tasks.data
    assert merged == single
    assert merged["config"]["shard"] is None and sum(r["trials"] for r in merged["results"]) == 8
    assert (tmp_path / "merged.json").exists()


def test_a_process_pool_given_paths_merges_into_the_single_process_report(tmp_path):
    np.save(tmp_path / "test.npy", TEST)
    np.save(tmp_path / "labels.npy", TEST_LABELS)
    files = dict(data=tmp_path / "test.npy", labels=tmp_path / "labels.npy")
    single = fitact_onnx.evaluate([MODEL], **files, **CAMPAIGN)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        merged = fitact_onnx.evaluate([MODEL], **files, executor=pool, shards=3, **CAMPAIGN)
    assert merged == single
    assert merged["models"][0]["model"] == str(MODEL)


def test_executor_arguments_are_checked(models):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="shards= needs executor="):
            fitact_onnx.evaluate(models, data=TEST, shards=2)
        with pytest.raises(ValueError, match="executor= needs shards="):
            fitact_onnx.evaluate(models, data=TEST, executor=pool)
        with pytest.raises(ValueError, match="shards: expected a whole number"):
            fitact_onnx.evaluate(models, data=TEST, executor=pool, shards=0)
        with pytest.raises(ValueError, match="shard= does not go with executor="):
            fitact_onnx.evaluate(models, data=TEST, executor=pool, shards=2, shard="0/2")


def test_merge_names_a_missing_shard_and_what_differs(models):
    options = dict(data=TEST, labels=TEST_LABELS, **CAMPAIGN)
    shards = [fitact_onnx.evaluate(models, shard=f"{k}/3", **options) for k in range(3)]
    with pytest.raises(fitact_onnx.FitactError, match=r"shard 1/3 is missing \(2 of 3 given\)"):
        fitact_onnx.merge([shards[2], shards[0]])
    with pytest.raises(fitact_onnx.FitactError, match=r"shard 0/3 is given twice \(reports\[0\] and reports\[1\]\)"):
        fitact_onnx.merge([shards[0], *shards])
    other = fitact_onnx.evaluate(models, shard="2/3", **dict(options, seed=4))
    with pytest.raises(fitact_onnx.FitactError,
                       match=r"different campaigns: config.seed is 3 in reports\[0\] but 4 in reports\[2\]"):
        fitact_onnx.merge([shards[0], shards[1], other])


def test_shard_auto_reads_the_schedulers_variables(models, monkeypatch):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    report = fitact_onnx.evaluate(models, data=TEST, shard="auto", shard_count=4, **CAMPAIGN)
    assert report["config"]["shard"] == {"index": 1, "count": 4}
    for var, value in [("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_COUNT", "4")]:
        monkeypatch.setenv(var, value)
    with pytest.raises(fitact_onnx.FitactError, match="both SLURM_ARRAY_TASK_ID"):
        fitact_onnx.evaluate(models, data=TEST, shard="auto", **CAMPAIGN)


def _cli_env(**extra):
    """The environment the examples' commands run in: the venv's fitact-onnx first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in SCHEDULER_VARS}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return dict(env, **extra)


def _single_process(cwd, *args):
    """The report of one process's `evaluate ARGS`, run in `cwd`."""
    subprocess.run(["fitact-onnx", "evaluate", *map(str, args), "-q", "--report", "single.json"], cwd=cwd,
                   env=_cli_env(), check=True)
    return (Path(cwd) / "single.json").read_text()


def test_the_kubernetes_example_runs_each_pods_command_and_the_merge(tmp_path):
    shards_job, merge_job = (d for d in yaml.safe_load_all((EXAMPLES / "kubernetes/campaign-job.yaml").read_text())
                             if d["kind"] == "Job")
    spec = shards_job["spec"]
    assert spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    count = {e["name"]: e["value"] for e in container["env"]}["FITACT_SHARD_COUNT"]
    assert int(count) == spec["completions"], "FITACT_SHARD_COUNT = completions"
    for job in (shards_job, merge_job):
        template = job["spec"]["template"]["spec"]
        claim = template["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert claim == "fitact-campaign" and template["containers"][0]["volumeMounts"][0]["mountPath"] == "/campaign"

    # The volume: a folder with the files the manifest names; a campaign small enough here.
    shutil.copy(MODEL, tmp_path / "model.onnx")
    shutil.copy(MODEL, tmp_path / "model.hardened.onnx")
    np.save(tmp_path / "test.npy", TEST)
    np.save(tmp_path / "test_labels.npy", TEST_LABELS)

    def local(command):
        assert command[:2] == ["sh", "-c"]
        return command[2].replace("/campaign/", f"{tmp_path}/").replace("--trials 200", "--trials 3")

    for index in range(spec["completions"]):
        subprocess.run(["sh", "-c", local(container["command"])], check=True,
                       env=_cli_env(JOB_COMPLETION_INDEX=str(index), FITACT_SHARD_COUNT=count))
    subprocess.run(["sh", "-c", local(merge_job["spec"]["template"]["spec"]["containers"][0]["command"])],
                   check=True, env=_cli_env())
    single = _single_process(tmp_path, tmp_path / "model.onnx", tmp_path / "model.hardened.onnx", "--data",
                             tmp_path / "test.npy", "--labels", tmp_path / "test_labels.npy",
                             "--ber", "1e-6,1e-5,1e-4", "--trials", "3", "--seed", "7")
    assert (tmp_path / "campaign.json").read_text() == single


def test_the_ci_example_runs_its_steps_harden_evaluate_in_shards_merge_check(tmp_path):
    workflow = yaml.safe_load((EXAMPLES / "ci/robustness.yml").read_text())
    np.save(tmp_path / "calib.npy", np.load(FIXTURES / "calib.npy")[:128])
    np.save(tmp_path / "test.npy", np.load(FIXTURES / "test.npy")[:64])
    np.save(tmp_path / "test_labels.npy", np.load(FIXTURES / "test_labels.npy")[:64])
    env = _cli_env(MODEL=str(MODEL), CALIB=str(tmp_path / "calib.npy"), TEST=str(tmp_path / "test.npy"),
                   TEST_LABELS=str(tmp_path / "test_labels.npy"))
    assert set(workflow["env"]) == {"MODEL", "CALIB", "TEST", "TEST_LABELS"}
    work = tmp_path / "work"
    work.mkdir()
    # Jobs in order, one working folder standing for the artifacts; installs are this venv's.
    for name in ("harden", "evaluate", "check"):
        job = workflow["jobs"][name]
        for shard in job.get("strategy", {}).get("matrix", {}).get("shard", [None]):
            for step in job["steps"]:
                if "run" not in step or step["name"].startswith("Install"):
                    continue
                # Fewer trials than a real campaign's: the same steps, quicker.
                script = step["run"].replace("${{ matrix.shard }}", str(shard)).replace("--trials 40", "--trials 4")
                done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=work,
                                      env=env, capture_output=True, text=True)
                assert done.returncode == 0, f"{name} / {step['name']}: {done.stdout}\n{done.stderr}"
    assert sorted(p.name for p in (work / "shards").iterdir()) == [f"shard-{k}.json" for k in range(4)]
    single = _single_process(work, MODEL, "build/hardened.onnx", "--data", env["TEST"], "--labels",
                             env["TEST_LABELS"], "--ber", "1e-6,1e-5,1e-4", "--trials", "4", "--seed", "7")
    assert (work / "build/campaign.json").read_text() == single
    assert (work / "build/check.json").exists()
