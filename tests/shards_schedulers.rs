//! A campaign spread by a scheduler: `evaluate --shard auto` in 4 processes given the
//! variables Slurm, a Kubernetes Indexed Job or the generic `FITACT_SHARD_*` set (and
//! `--shard K/N`), merged, is the single-process report byte for byte; `merge` refuses
//! shards of another campaign (settings, model or data), and a shard missing or given twice;
//! the Slurm example's job scripts, run here with the variables Slurm would set, merge into
//! the single-process report too.

mod common;

use common::{cli, fixture, repo};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The variables `--shard auto` reads, removed from every run so the test's own environment
/// (a CI job in a Slurm array...) cannot choose a shard.
const SCHEDULER_VARS: &[&str] = &[
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_STEP",
    "JOB_COMPLETION_INDEX",
    "FITACT_SHARD_INDEX",
    "FITACT_SHARD_COUNT",
];

/// A small campaign on the AlexNet fixture: 16 test samples, 4 trials at 2 BERs.
struct Campaign {
    dir: tempfile::TempDir,
    model: PathBuf,
    data: PathBuf,
    labels: PathBuf,
}

impl Campaign {
    fn new() -> Campaign {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.npy");
        let labels = dir.path().join("labels.npy");
        let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(fixture("test.npy")).unwrap();
        let y: ndarray::ArrayD<i64> = ndarray_npy::read_npy(fixture("test_labels.npy")).unwrap();
        let rows = ndarray::Slice::from(0..16);
        ndarray_npy::write_npy(&data, &x.slice_axis(ndarray::Axis(0), rows).to_owned()).unwrap();
        ndarray_npy::write_npy(&labels, &y.slice_axis(ndarray::Axis(0), rows).to_owned()).unwrap();
        Campaign {
            model: fixture("alexnet.onnx"),
            dir,
            data,
            labels,
        }
    }

    fn at(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `evaluate` of `model` on `data` with the campaign's settings, `extra` flags and `env`
    /// (the variables `--shard auto` reads: these only).
    fn evaluate(&self, model: &Path, data: &Path, extra: &[&str], env: &[(&str, String)], report: &Path) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fitact-onnx"));
        command.arg("evaluate").arg(model).arg("--data").arg(data);
        command.arg("--labels").arg(&self.labels).arg("--report").arg(report);
        // The campaign's settings, where `extra` does not give its own.
        for pair in [["--ber", "1e-5,1e-4"], ["--trials", "4"], ["--batch-size", "16"]] {
            if !extra.contains(&pair[0]) {
                command.args(pair);
            }
        }
        command.arg("-q").args(extra);
        for var in SCHEDULER_VARS {
            command.env_remove(var);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command.output().unwrap()
    }

    /// The report of a run that must succeed.
    fn report(&self, extra: &[&str], env: &[(&str, String)], name: &str) -> String {
        let report = self.at(name);
        let run = self.evaluate(&self.model, &self.data, extra, env, &report);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        std::fs::read_to_string(report).unwrap()
    }
}

/// `merge` of `reports` into `out`.
fn merge(reports: &[PathBuf], out: &Path) -> Output {
    let mut args = vec!["merge".to_owned()];
    args.extend(reports.iter().map(|p| p.display().to_string()));
    args.extend(["--report".to_owned(), out.display().to_string(), "-q".to_owned()]);
    cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The one line a refused command printed, checked to be an error (exit 2).
fn refused(run: &Output) -> String {
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn shards_from_each_schedulers_variables_merge_into_the_single_process_report() {
    let c = Campaign::new();
    let whole = c.report(&["--seed", "5"], &[], "whole.json");
    let auto = ["--seed", "5", "--shard", "auto"];
    let n = |v: usize| v.to_string();
    // Slurm: `--array=10-13` (ids need not start at 0), with MAX; and `--array=0-3` with COUNT.
    let slurm_max = |k: usize| {
        let vars = [
            ("SLURM_ARRAY_TASK_MIN", 10),
            ("SLURM_ARRAY_TASK_MAX", 13),
            ("SLURM_ARRAY_TASK_STEP", 1),
        ];
        let mut env: Vec<(&str, String)> = vars.iter().map(|(k, v)| (*k, n(*v))).collect();
        env.push(("SLURM_ARRAY_TASK_ID", n(10 + k)));
        env
    };
    let slurm_count = |k: usize| {
        vec![
            ("SLURM_ARRAY_TASK_ID", n(k)),
            ("SLURM_ARRAY_TASK_MIN", n(0)),
            ("SLURM_ARRAY_TASK_COUNT", n(4)),
        ]
    };
    // A Kubernetes Indexed Job: the index from Kubernetes, the count from the manifest.
    let kubernetes = |k: usize| vec![("JOB_COMPLETION_INDEX", n(k)), ("FITACT_SHARD_COUNT", n(4))];
    let generic = |k: usize| vec![("FITACT_SHARD_INDEX", n(k)), ("FITACT_SHARD_COUNT", n(4))];
    type Env<'a> = &'a dyn Fn(usize) -> Vec<(&'static str, String)>;
    let counted = [&auto[..], &["--shard-count", "4"]].concat();
    let schedulers: [(&str, Env, &[&str]); 4] = [
        ("slurm-max", &slurm_max, &auto),
        ("slurm-count", &slurm_count, &counted),
        ("kubernetes", &kubernetes, &auto),
        ("generic", &generic, &auto),
    ];
    for (name, env, flags) in schedulers {
        // Listed out of order: merge sorts them by shard.
        let shards: Vec<PathBuf> = [2, 0, 3, 1]
            .iter()
            .map(|k| {
                let file = format!("{name}-{k}.json");
                let report = c.report(flags, &env(*k), &file);
                let json: serde_json::Value = serde_json::from_str(&report).unwrap();
                assert_eq!(
                    json["config"]["shard"],
                    serde_json::json!({"index": k, "count": 4}),
                    "{name}"
                );
                c.at(&file)
            })
            .collect();
        let merged = c.at(&format!("{name}.json"));
        let run = merge(&shards, &merged);
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(
            std::fs::read_to_string(&merged).unwrap(),
            whole,
            "{name}: merged = whole"
        );
    }
    let given: Vec<PathBuf> = (0..4)
        .map(|k| {
            let file = format!("given-{k}.json");
            c.report(&["--seed", "5", "--shard", &format!("{k}/4")], &[], &file);
            c.at(&file)
        })
        .collect();
    assert!(merge(&given, &c.at("given.json")).status.success());
    assert_eq!(std::fs::read_to_string(c.at("given.json")).unwrap(), whole);

    // The report names what it ran on: its models' and data's digests.
    let json: serde_json::Value = serde_json::from_str(&whole).unwrap();
    let sha = |v: &serde_json::Value| v.as_str().map(str::len);
    assert_eq!(sha(&json["models"][0]["sha256"]), Some(64));
    assert_eq!(sha(&json["config"]["data_sha256"]), Some(64));
}

#[test]
fn merge_refuses_another_campaign_and_a_shard_missing_or_twice() {
    let c = Campaign::new();
    let shard = |k: usize, extra: &[&str], name: &str| -> PathBuf {
        let given = format!("{k}/4");
        let flags = [&["--shard", given.as_str()][..], extra].concat();
        c.report(&flags, &[], name);
        c.at(name)
    };
    let shards: Vec<PathBuf> = (0..4)
        .map(|k| shard(k, &["--seed", "5"], &format!("s{k}.json")))
        .collect();

    let missing = refused(&merge(&[&shards[..2], &shards[3..]].concat(), &c.at("m.json")));
    assert!(missing.contains("shard 2/4 is missing (3 of 4 given)"), "{missing}");
    let two_missing = refused(&merge(&shards[..2], &c.at("m.json")));
    assert!(
        two_missing.contains("2 of 4 shards are missing: 2/4, 3/4"),
        "{two_missing}"
    );
    let twice = refused(&merge(&[&shards[..], &shards[1..2]].concat(), &c.at("m.json")));
    assert!(twice.contains("shard 1/4 is given twice"), "{twice}");
    c.report(
        &["--seed", "5", "--shard", "1/2", "--shard-count", "2"],
        &[],
        "half.json",
    );
    let other_split = c.at("half.json");
    let split = refused(&merge(&[shards[0].clone(), other_split], &c.at("m.json")));
    assert!(split.contains("share N"), "{split}");

    let other_seed = shard(3, &["--seed", "6"], "seed.json");
    let seed = refused(&merge(&[&shards[..3], &[other_seed]].concat(), &c.at("m.json")));
    assert!(
        seed.contains("different campaigns: config.seed is 5 in") && seed.contains("but 6 in"),
        "{seed}"
    );
    let other_trials = shard(3, &["--seed", "5", "--trials", "8"], "trials.json");
    let trials = refused(&merge(&[&shards[..3], &[other_trials]].concat(), &c.at("m.json")));
    assert!(trials.contains("config.trials is 4 in"), "{trials}");

    // Other data: one sample changed, at another path. Another model: the same weights with
    // another doc string, so only its bytes differ.
    let mut x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&c.data).unwrap();
    x[[0, 0, 0, 0]] += 0.5;
    let data = c.at("other-data.npy");
    ndarray_npy::write_npy(&data, &x).unwrap();
    let run = c.evaluate(
        &c.model,
        &data,
        &["--seed", "5", "--shard", "3/4"],
        &[],
        &c.at("data.json"),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let other = refused(&merge(&[&shards[..3], &[c.at("data.json")]].concat(), &c.at("m.json")));
    assert!(
        other.contains("config.data_sha256 is ") && other.contains("... in "),
        "{other}"
    );
    let mut model = fitact_onnx::model_io::read_model(&c.model).unwrap().model;
    model.doc_string = Some("another model".into());
    let other_model = c.at("other-model.onnx");
    std::fs::write(&other_model, fitact_onnx::model_io::encode(&model)).unwrap();
    let run = c.evaluate(
        &other_model,
        &c.data,
        &["--seed", "5", "--shard", "3/4"],
        &[],
        &c.at("model.json"),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let other = refused(&merge(&[&shards[..3], &[c.at("model.json")]].concat(), &c.at("m.json")));
    assert!(other.contains("models[0].sha256 is "), "{other}");

    // The same model and data at other paths are the same campaign: merged, the report keeps
    // shard 0's paths.
    let (model_copy, data_copy) = (c.at("copy.onnx"), c.at("copy.npy"));
    std::fs::copy(&c.model, &model_copy).unwrap();
    std::fs::copy(&c.data, &data_copy).unwrap();
    let run = c.evaluate(
        &model_copy,
        &data_copy,
        &["--seed", "5", "--shard", "3/4"],
        &[],
        &c.at("copy.json"),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let run = merge(&[&shards[..3], &[c.at("copy.json")]].concat(), &c.at("copied.json"));
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let whole = merge(&shards, &c.at("whole.json"));
    assert!(whole.status.success());
    assert_eq!(
        std::fs::read_to_string(c.at("copied.json")).unwrap(),
        std::fs::read_to_string(c.at("whole.json")).unwrap()
    );
}

#[test]
fn shard_auto_refuses_what_it_cannot_read_in_one_line() {
    let c = Campaign::new();
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        refused(&c.evaluate(
            &c.model,
            &c.data,
            &[&["--shard", "auto"][..], extra].concat(),
            &env,
            &c.at("x.json"),
        ))
    };
    let none = run(&[], &[]);
    assert!(none.contains("--shard auto found no scheduler"), "{none}");
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "4"),
        ("SLURM_ARRAY_TASK_MIN", "0"),
        ("SLURM_ARRAY_TASK_MAX", "12"),
    ];
    let step = run(
        &[],
        &[
            &slurm[..],
            &[("SLURM_ARRAY_TASK_STEP", "4"), ("SLURM_ARRAY_TASK_COUNT", "4")],
        ]
        .concat(),
    );
    assert!(step.contains("step by 4") && step.contains("not contiguous"), "{step}");
    let both = run(&[], &[&slurm[..], &[("JOB_COMPLETION_INDEX", "1")]].concat());
    assert!(
        both.contains("both SLURM_ARRAY_TASK_ID (Slurm) and JOB_COMPLETION_INDEX (Kubernetes)"),
        "{both}"
    );
    let disagree = run(&["--shard-count", "4"], &slurm);
    assert!(
        disagree.contains("task count is 13 but --shard-count is 4"),
        "{disagree}"
    );
    let no_count = run(&[], &[("JOB_COMPLETION_INDEX", "1")]);
    assert!(
        no_count.contains("gives the shard index but not the count"),
        "{no_count}"
    );
}

/// docs/examples/slurm/run_locally.sh: the array job's script run 4 times with the variables
/// Slurm sets for `--array=0-3`, then the merge job's, compared with one process's report.
#[test]
fn the_slurm_example_runs_and_merges_into_the_single_process_report() {
    let dir = tempfile::tempdir().unwrap();
    let script = repo().join("docs/examples/slurm/run_locally.sh");
    let mut command = Command::new("bash");
    command.arg(&script).arg(dir.path());
    command.env("FITACT", env!("CARGO_BIN_EXE_fitact-onnx"));
    for var in SCHEDULER_VARS {
        command.env_remove(var);
    }
    let run = command.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("merged = single process"), "{stdout}");
    assert!(dir.path().join("shards/shard-3.json").exists());
}
