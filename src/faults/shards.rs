//! Spreading a campaign over processes and machines, and putting it back together.
//!
//! Owns: which slice of the trials a run does (`--shard K/N`: trial t belongs to shard
//! `t % N`; `--shard auto`: K and N from the scheduler running the process, read from an
//! environment handed in as a map), the campaign's identity in its report (SHA-256 of each
//! model's files and of the samples as read, filled by `evaluate_identified`), and `merge`,
//! which refuses reports of different campaigns and a set of shards with one missing or
//! given twice. Every trial is seeded by its own index, so merged shards are the whole run.

use crate::data::dataset::{Dataset, load_dataset};
use crate::engine::{ElemType, Value};
use crate::faults::campaign::{EvaluateOptions, evaluate_on};
use crate::faults::campaign_report::{CampaignReport, ModelSummary};
use crate::faults::statistics::aggregate;
use crate::model_io::read_model;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which slice of the trials this run does: trial t belongs to shard `t % count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("'{s}' is not K/N"))?;
        let index: usize = k.parse().map_err(|_| format!("'{k}' is not a shard number"))?;
        let count: usize = n.parse().map_err(|_| format!("'{n}' is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= K < N"));
        }
        Ok(Shard { index, count })
    }
}

/// What `--shard` asks for: a slice given as K/N, or `auto`, the slice the scheduler running
/// the process was told to run (`resolve_shard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardRequest {
    Given(Shard),
    Auto,
}

impl std::str::FromStr for ShardRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<ShardRequest, String> {
        if s == "auto" {
            return Ok(ShardRequest::Auto);
        }
        s.parse()
            .map(ShardRequest::Given)
            .map_err(|e| format!("{e} (or 'auto')"))
    }
}

/// The shard count where the scheduler gives only the index: a Kubernetes Indexed Job does
/// not tell its pods how many completions it has, so its manifest sets this from the spec.
pub const SHARD_COUNT_VAR: &str = "FITACT_SHARD_COUNT";
/// The shard index for any other scheduler (with `SHARD_COUNT_VAR`), set by its job script
/// from the scheduler's own variable (PBS `PBS_ARRAY_INDEX`, LSF `LSB_JOBINDEX`, ...).
pub const SHARD_INDEX_VAR: &str = "FITACT_SHARD_INDEX";

/// A shard index found in the environment, and the count when the scheduler gives it.
struct Found {
    scheduler: &'static str,
    variable: &'static str,
    index: usize,
    count: Option<usize>,
}

/// The shard this run does. `Given` is taken as is (`count`, from `--shard-count`, must
/// agree). `Auto` reads `env` (the process environment, as a map so tests need not change
/// the real one): a Slurm array job, a Kubernetes Indexed Job or `FITACT_SHARD_INDEX`,
/// exactly one of them, with the count from Slurm, `count` or `FITACT_SHARD_COUNT`, which
/// must agree where several are given.
pub fn resolve_shard(request: ShardRequest, count: Option<usize>, env: &BTreeMap<String, String>) -> Result<Shard> {
    let found = match request {
        ShardRequest::Given(shard) => {
            if let Some(n) = count.filter(|n| *n != shard.count) {
                bail!("--shard {shard} and --shard-count {n} disagree");
            }
            return Ok(shard);
        }
        ShardRequest::Auto => scheduler_index(env)?,
    };
    let mut counts: Vec<(String, usize)> = Vec::new();
    if let Some(n) = found.count {
        counts.push((format!("the {} array's task count", found.scheduler), n));
    }
    if let Some(n) = count {
        counts.push(("--shard-count".to_owned(), n));
    }
    if let Some(n) = env_number(env, SHARD_COUNT_VAR)? {
        counts.push((SHARD_COUNT_VAR.to_owned(), n));
    }
    let Some((_, n)) = counts.first().cloned() else {
        bail!(
            "--shard auto: {} ({}) gives the shard index but not the count: set {SHARD_COUNT_VAR} \
             (a Kubernetes Job's completions) or pass --shard-count",
            found.variable,
            found.scheduler
        );
    };
    if let Some((other, m)) = counts.iter().find(|(_, m)| *m != n) {
        bail!("--shard auto: {} is {n} but {other} is {m}", counts[0].0);
    }
    ensure!(n > 0, "--shard auto: a shard count of 0");
    ensure!(
        found.index < n,
        "--shard auto: {} gives shard {} of {n}: need 0 <= K < N",
        found.variable,
        found.index
    );
    log::info!(
        "shard {}/{n}, from {} ({})",
        found.index,
        found.scheduler,
        found.variable
    );
    Ok(Shard {
        index: found.index,
        count: n,
    })
}

/// The one scheduler whose variables give a shard index, or why there is not exactly one.
fn scheduler_index(env: &BTreeMap<String, String>) -> Result<Found> {
    let mut found: Vec<Found> = [slurm_index(env)?, kubernetes_index(env)?, generic_index(env)?]
        .into_iter()
        .flatten()
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "--shard auto found no scheduler: none of SLURM_ARRAY_TASK_ID (a Slurm array job), \
             JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or {SHARD_INDEX_VAR} is set; give --shard K/N"
        ),
        _ => bail!(
            "--shard auto: both {} ({}) and {} ({}) are set; which one is this shard's is ambiguous",
            found[0].variable,
            found[0].scheduler,
            found[1].variable,
            found[1].scheduler
        ),
    }
}

/// A Slurm array job (`sbatch --array=0-15`): index = TASK_ID - MIN, count = COUNT, or
/// MAX - MIN + 1. Ids with gaps (a step, `--array=0-15:4`, or a list, `--array=1,3,7`) are
/// refused: the shards would not cover the trials.
fn slurm_index(env: &BTreeMap<String, String>) -> Result<Option<Found>> {
    let Some(id) = env_number(env, "SLURM_ARRAY_TASK_ID")? else {
        return Ok(None);
    };
    let min = env_number(env, "SLURM_ARRAY_TASK_MIN")?
        .context("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_MIN is not")?;
    if let Some(step) = env_number(env, "SLURM_ARRAY_TASK_STEP")?.filter(|s| *s != 1) {
        bail!(
            "--shard auto: the Slurm array's task ids step by {step} (SLURM_ARRAY_TASK_STEP), so they \
             are not contiguous: submit a range with step 1, e.g. --array=0-{}",
            env_number(env, "SLURM_ARRAY_TASK_COUNT")?.map_or("N-1".to_owned(), |n| (n.max(1) - 1).to_string())
        );
    }
    let max = env_number(env, "SLURM_ARRAY_TASK_MAX")?;
    let count = env_number(env, "SLURM_ARRAY_TASK_COUNT")?;
    let span = match max {
        Some(max) if max < min => bail!("--shard auto: SLURM_ARRAY_TASK_MAX {max} is below SLURM_ARRAY_TASK_MIN {min}"),
        Some(max) => Some(max - min + 1),
        None => None,
    };
    let count = match (count, span) {
        (Some(count), Some(span)) if count != span => bail!(
            "--shard auto: the Slurm array's task ids are not contiguous ({count} tasks from {min} to {}): \
             submit a range with step 1, e.g. --array=0-{}",
            min + span - 1,
            count.max(1) - 1
        ),
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => bail!(
            "--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is"
        ),
    };
    ensure!(
        id >= min,
        "--shard auto: SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"
    );
    Ok(Some(Found {
        scheduler: "Slurm",
        variable: "SLURM_ARRAY_TASK_ID",
        index: id - min,
        count: Some(count),
    }))
}

/// A Kubernetes Indexed Job (`completionMode: Indexed`): the index only.
fn kubernetes_index(env: &BTreeMap<String, String>) -> Result<Option<Found>> {
    Ok(env_number(env, "JOB_COMPLETION_INDEX")?.map(|index| Found {
        scheduler: "Kubernetes",
        variable: "JOB_COMPLETION_INDEX",
        index,
        count: None,
    }))
}

/// `FITACT_SHARD_INDEX`, set by hand or by another scheduler's job script: the index only.
fn generic_index(env: &BTreeMap<String, String>) -> Result<Option<Found>> {
    Ok(env_number(env, SHARD_INDEX_VAR)?.map(|index| Found {
        scheduler: "generic",
        variable: SHARD_INDEX_VAR,
        index,
        count: None,
    }))
}

/// The whole number in `env[name]`, if it is set (and not empty).
fn env_number(env: &BTreeMap<String, String>, name: &str) -> Result<Option<usize>> {
    match env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => match v.parse() {
            Ok(n) => Ok(Some(n)),
            Err(_) => bail!("--shard auto: {name}='{v}' is not a whole number"),
        },
    }
}

/// `evaluate`, with the campaign's identity in its report: `models[i].sha256` (the model file
/// followed by its external data files, in name order) and `config.data_sha256` (the samples
/// and labels as read: names, types, shapes and values, whatever file or folder or memory
/// they came from). This is what the CLI runs; `merge` then compares contents, not paths.
pub fn evaluate_identified(options: &EvaluateOptions) -> Result<CampaignReport> {
    ensure!(!options.models.is_empty(), "no model to evaluate");
    let mut digests = Vec::with_capacity(options.models.len());
    let mut first = None;
    for path in &options.models {
        let file = read_model(path)?;
        digests.push(files_sha256(&file.files_read)?);
        first.get_or_insert(file.model);
    }
    let first = first.context("no model to evaluate")?;
    let data = load_dataset(
        &options.data,
        &first,
        options.labels.as_deref(),
        &options.images,
        options.data_cap,
    )
    .context("reading the data")?;
    let data_digest = data_sha256(&data);
    let mut report = evaluate_on(options, Some(data))?;
    report.config.data_sha256 = Some(data_digest);
    for (summary, digest) in report.models.iter_mut().zip(digests) {
        summary.sha256 = Some(digest);
    }
    Ok(report)
}

/// SHA-256 of `files[0]` (the model) then of the others (external data) in file-name order,
/// so the digest does not depend on where the files are; a lone model file's digest is what
/// `sha256sum` prints.
fn files_sha256(files: &[PathBuf]) -> Result<String> {
    let mut rest: Vec<&PathBuf> = files.iter().skip(1).collect();
    rest.sort_by_key(|p| p.file_name().map(|n| n.to_owned()));
    rest.dedup();
    let mut hasher = Sha256::new();
    for path in files.iter().take(1).chain(rest) {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", Path::new(path).display()))?;
        hasher.update(&bytes);
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of the samples (per input: name, type, shape, little-endian values) and of the
/// labels, if any.
fn data_sha256(data: &Dataset) -> String {
    let mut hasher = Sha256::new();
    for (name, value) in &data.samples.inputs {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(value.elem_type().name().as_bytes());
        hasher.update((value.shape().len() as u64).to_le_bytes());
        for dim in value.shape() {
            hasher.update((*dim as u64).to_le_bytes());
        }
        hash_values(&mut hasher, value);
    }
    match &data.labels {
        None => hasher.update([0u8]),
        Some(labels) => {
            hasher.update([1u8]);
            hash_elements(&mut hasher, labels.iter().map(|l| (*l as u64).to_le_bytes()));
        }
    }
    hex(&hasher.finalize())
}

fn hash_values(hasher: &mut Sha256, value: &Value) {
    fn each<T: crate::engine::Element + Copy, const W: usize>(
        hasher: &mut Sha256,
        value: &Value,
        bytes: fn(T) -> [u8; W],
    ) {
        if let Some(view) = value.view::<T>() {
            hash_elements(hasher, view.iter().map(|v| bytes(*v)));
        }
    }
    match value.elem_type() {
        ElemType::F32 => each(hasher, value, f32::to_le_bytes),
        ElemType::F16 => each(hasher, value, half::f16::to_le_bytes),
        ElemType::F64 => each(hasher, value, f64::to_le_bytes),
        ElemType::U8 => each(hasher, value, u8::to_le_bytes),
        ElemType::I8 => each(hasher, value, i8::to_le_bytes),
        ElemType::I32 => each(hasher, value, i32::to_le_bytes),
        ElemType::I64 => each(hasher, value, i64::to_le_bytes),
        ElemType::Bool => each(hasher, value, |b: bool| [u8::from(b)]),
        ElemType::Other => {}
    }
}

/// Feeds elements' bytes through a buffer: one `update` per element is several times slower.
fn hash_elements<const W: usize>(hasher: &mut Sha256, elements: impl Iterator<Item = [u8; W]>) {
    let mut buffer = Vec::with_capacity(1 << 16);
    for bytes in elements {
        buffer.extend_from_slice(&bytes);
        if buffer.len() >= 1 << 16 {
            hasher.update(&buffer);
            buffer.clear();
        }
    }
    hasher.update(&buffer);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Puts the reports of a campaign's shards back together; each comes with a name (its file)
/// for the messages. Refuses reports of different campaigns (naming the first setting,
/// model or data that differs), a shard missing or given twice, and trials present twice.
/// The shards may come in any order; the merged report is the whole run's.
pub fn merge(parts: Vec<(String, CampaignReport)>) -> Result<CampaignReport> {
    ensure!(!parts.is_empty(), "no report to merge");
    let parts = in_shard_order(parts)?;
    let (first_name, first) = &parts[0];
    for (name, report) in &parts[1..] {
        same_campaign((first_name, first), (name, report))?;
    }
    let mut config = first.config.clone();
    config.shard = None;
    let trials: Vec<_> = parts.iter().flat_map(|(_, r)| r.trials.iter().cloned()).collect();
    let mut keys: Vec<(usize, usize, usize)> = trials.iter().map(|r| (r.model, r.ber, r.trial)).collect();
    keys.sort();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "trial {} at BER {} is in more than one report",
            w[0].2,
            config.bers.get(w[0].1).copied().unwrap_or(f64::NAN)
        );
    }
    let expected = first.models.len() * config.bers.len() * config.trials;
    ensure!(
        keys.len() == expected,
        "the reports hold {} trial records; the campaign has {expected} ({} models x {} BERs x {} trials)",
        keys.len(),
        first.models.len(),
        config.bers.len(),
        config.trials
    );
    let models = first
        .models
        .iter()
        .map(|m| ModelSummary {
            accuracy_auc: None,
            ..m.clone()
        })
        .collect();
    Ok(aggregate(first.engine.clone(), config, models, trials))
}

/// The reports sorted by shard index, once each shard 0..N of one N is there exactly once
/// (or the one report of a whole campaign).
fn in_shard_order(mut parts: Vec<(String, CampaignReport)>) -> Result<Vec<(String, CampaignReport)>> {
    if let Some((name, _)) = parts.iter().find(|(_, r)| r.config.shard.is_none())
        && parts.len() > 1
    {
        bail!("{name} is a whole campaign (run without --shard): merge takes the shards of one campaign");
    }
    let shard = |r: &CampaignReport| r.config.shard.unwrap_or(Shard { index: 0, count: 1 });
    let count = shard(&parts[0].1).count;
    if let Some((name, report)) = parts.iter().find(|(_, r)| shard(r).count != count) {
        bail!(
            "{} is shard {} but {name} is shard {}: the shards of one campaign share N",
            parts[0].0,
            shard(&parts[0].1),
            shard(report)
        );
    }
    parts.sort_by_key(|(_, r)| shard(r).index);
    if let Some(w) = parts.windows(2).find(|w| shard(&w[0].1).index == shard(&w[1].1).index) {
        bail!("shard {} is given twice ({} and {})", shard(&w[0].1), w[0].0, w[1].0);
    }
    let given: Vec<usize> = parts.iter().map(|(_, r)| shard(r).index).collect();
    let missing: Vec<String> = (0..count)
        .filter(|k| given.binary_search(k).is_err())
        .map(|k| format!("{k}/{count}"))
        .collect();
    match missing.len() {
        0 => Ok(parts),
        1 => bail!("shard {} is missing ({} of {count} given)", missing[0], given.len()),
        n => bail!(
            "{n} of {count} shards are missing: {}{}",
            missing[..n.min(8)].join(", "),
            if n > 8 { ", ..." } else { "" }
        ),
    }
}

/// Whether `b` is a shard of `a`'s campaign: the same version, engine, settings, models and
/// data; else the first thing that differs, named as the report names it.
fn same_campaign((a_name, a): (&str, &CampaignReport), (b_name, b): (&str, &CampaignReport)) -> Result<()> {
    ensure!(
        a.version == b.version,
        "{a_name} and {b_name} were written by different versions of {} ({} and {}): merge shards of one version",
        a.tool,
        a.version,
        b.version
    );
    if a.engine != b.engine {
        let name = |e: &Option<crate::engine::EngineInfo>| {
            e.as_ref()
                .map_or("an unnamed engine".to_owned(), |e| format!("{} {}", e.name, e.version))
        };
        bail!(
            "the reports were run in different engines ({} and {}): merge shards run in one engine",
            name(&a.engine),
            name(&b.engine)
        );
    }
    let by_content = identified(a) && identified(b);
    let (ia, ib) = (identity(a, by_content), identity(b, by_content));
    // Causes before their effects: the settings, the data, the number of models, the models'
    // digests, then what follows from them (a model's clean accuracy, its weight count).
    let rank = |k: &str| match (k.starts_with("models"), k.ends_with("sha256")) {
        (false, false) => 0,
        (false, true) => 1,
        _ if k == "models (count)" => 2,
        (true, true) => 3,
        (true, false) => 4,
    };
    let mut keys: Vec<&String> = ia.keys().chain(ib.keys()).collect();
    keys.sort_by_key(|k| (rank(k), k.as_str()));
    keys.dedup();
    let null = serde_json::Value::Null;
    for key in keys {
        let (va, vb) = (ia.get(key).unwrap_or(&null), ib.get(key).unwrap_or(&null));
        if va != vb {
            bail!(
                "the reports are of different campaigns: {key} is {} in {a_name} but {} in {b_name}",
                shown(key, va),
                shown(key, vb)
            );
        }
    }
    Ok(())
}

/// Whether the report carries the digests of its models and data.
fn identified(r: &CampaignReport) -> bool {
    r.config.data_sha256.is_some() && r.models.iter().all(|m| m.sha256.is_some())
}

/// What makes a report's campaign, by its place in the report (`config.seed`,
/// `models[1].sha256`): the settings but the shard, each model's summary but the AUC (which
/// merge recomputes), and, `by_content`, the digests instead of the paths.
fn identity(r: &CampaignReport, by_content: bool) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let names: &[&str] = if by_content { &["data", "labels", "model"] } else { &[] };
    let mut add = |prefix: String, value: serde_json::Value, skip: &[&str]| {
        if let serde_json::Value::Object(fields) = value {
            for (k, v) in fields {
                if !skip.contains(&k.as_str()) && !names.contains(&k.as_str()) {
                    out.insert(format!("{prefix}.{k}"), v);
                }
            }
        }
    };
    add("config".into(), serde_json::json!(r.config), &["shard"]);
    for (i, model) in r.models.iter().enumerate() {
        add(format!("models[{i}]"), serde_json::json!(model), &["accuracy_auc"]);
    }
    out.insert("models (count)".into(), serde_json::json!(r.models.len()));
    out
}

/// A value for a message: JSON, a digest shortened to 12 digits.
fn shown(key: &str, value: &serde_json::Value) -> String {
    match value.as_str() {
        Some(digest) if key.ends_with("sha256") && digest.len() > 12 => format!("{}...", &digest[..12]),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn auto(pairs: &[(&str, &str)], count: Option<usize>) -> Result<Shard, String> {
        resolve_shard(ShardRequest::Auto, count, &env(pairs)).map_err(|e| e.to_string())
    }

    #[test]
    fn slurm_arrays_give_index_from_the_minimum_and_count() {
        let base = [("SLURM_ARRAY_TASK_MIN", "4"), ("SLURM_ARRAY_TASK_MAX", "7")];
        let id = |k: &'static str| [&base[..], &[("SLURM_ARRAY_TASK_ID", k)]].concat();
        assert_eq!(auto(&id("6"), None), Ok(Shard { index: 2, count: 4 }));
        let counted = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        assert_eq!(auto(&counted, None), Ok(Shard { index: 0, count: 3 }));
        let stepped = [&id("4")[..], &[("SLURM_ARRAY_TASK_STEP", "1")]].concat();
        assert_eq!(auto(&stepped, Some(4)), Ok(Shard { index: 0, count: 4 }));
    }

    #[test]
    fn slurm_arrays_with_gaps_are_refused() {
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "12"),
            ("SLURM_ARRAY_TASK_STEP", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let e = auto(&stepped, None).unwrap_err();
        assert!(e.contains("step by 4") && e.contains("--array=0-3"), "{e}");
        let listed = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        let e = auto(&listed, None).unwrap_err();
        assert!(e.contains("not contiguous (3 tasks from 1 to 7)"), "{e}");
        let e = auto(&[("SLURM_ARRAY_TASK_ID", "3")], None).unwrap_err();
        assert!(e.contains("SLURM_ARRAY_TASK_MIN is not"), "{e}");
    }

    #[test]
    fn kubernetes_and_generic_indices_take_the_count_from_a_flag_or_the_variable() {
        assert_eq!(
            auto(&[("JOB_COMPLETION_INDEX", "3"), (SHARD_COUNT_VAR, "4")], None),
            Ok(Shard { index: 3, count: 4 })
        );
        assert_eq!(
            auto(&[("JOB_COMPLETION_INDEX", "1")], Some(2)),
            Ok(Shard { index: 1, count: 2 })
        );
        assert_eq!(
            auto(&[(SHARD_INDEX_VAR, "0"), (SHARD_COUNT_VAR, "1")], None),
            Ok(Shard { index: 0, count: 1 })
        );
        let e = auto(&[("JOB_COMPLETION_INDEX", "1")], None).unwrap_err();
        assert!(e.contains("not the count") && e.contains(SHARD_COUNT_VAR), "{e}");
        let e = auto(&[("JOB_COMPLETION_INDEX", "4"), (SHARD_COUNT_VAR, "4")], None).unwrap_err();
        assert!(e.contains("shard 4 of 4"), "{e}");
    }

    #[test]
    fn none_two_or_disagreeing_sources_are_refused() {
        let e = auto(&[("HOME", "/root")], None).unwrap_err();
        assert!(e.contains("found no scheduler"), "{e}");
        let both = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("JOB_COMPLETION_INDEX", "0"),
        ];
        let e = auto(&both, None).unwrap_err();
        assert!(
            e.contains("both SLURM_ARRAY_TASK_ID (Slurm) and JOB_COMPLETION_INDEX"),
            "{e}"
        );
        let slurm = &both[..3];
        let e = auto(slurm, Some(3)).unwrap_err();
        assert_eq!(
            e,
            "--shard auto: the Slurm array's task count is 4 but --shard-count is 3"
        );
        let e = auto(&[("JOB_COMPLETION_INDEX", "0"), (SHARD_COUNT_VAR, "2")], Some(3)).unwrap_err();
        assert_eq!(e, "--shard auto: --shard-count is 3 but FITACT_SHARD_COUNT is 2");
        let e = auto(&[("JOB_COMPLETION_INDEX", "x")], Some(3)).unwrap_err();
        assert!(e.contains("JOB_COMPLETION_INDEX='x' is not a whole number"), "{e}");
        let given = resolve_shard(ShardRequest::Given(Shard { index: 1, count: 4 }), Some(3), &env(&[]));
        assert_eq!(
            given.unwrap_err().to_string(),
            "--shard 1/4 and --shard-count 3 disagree"
        );
    }

    #[test]
    fn shard_requests_parse() {
        assert_eq!("auto".parse(), Ok(ShardRequest::Auto));
        assert_eq!("1/3".parse(), Ok(ShardRequest::Given(Shard { index: 1, count: 3 })));
        assert!("3/3".parse::<ShardRequest>().unwrap_err().contains("or 'auto'"));
    }
}
