//! The deploy scripts: what `--dry-run` prints is exactly what a real run executes, and bad
//! input stops them before anything runs.
//!
//! A real run here talks to `gcloud` and `bq` stand-ins that only record their arguments
//! (Google Cloud is not reachable from tests), and keep the lifecycle files they are given;
//! `projects describe` answers a project number and every other `describe` answers "not
//! found", as for a new project.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{json, Value};

fn root() -> PathBuf {
    ferry_testkit::workspace_root()
}

struct Recorder {
    dir: PathBuf,
}

impl Recorder {
    /// Stand-ins for a new project: nothing exists yet.
    fn new() -> Self {
        Self::with(false)
    }

    /// Stand-ins for a project where everything the scripts create already exists.
    fn existing() -> Self {
        Self::with(true)
    }

    fn with(exists: bool) -> Self {
        let describe = if exists { 0 } else { 1 };
        let dir = std::env::temp_dir().join(ferry_testkit::unique("ferry-deploy"));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        for tool in ["gcloud", "bq"] {
            let script = format!(
                r#"#!/usr/bin/env bash
printf '%s' {tool} >> "{log}"
for a in "$@"; do printf ' %q' "$a" >> "{log}"; done
echo >> "{log}"
for a in "$@"; do
  case "$a" in --lifecycle-file=*) mkdir -p "{kept}"; cp "${{a#*=}}" "{kept}/${{4#gs://}}.json" ;; esac
done
case "$*" in
  "projects describe "*) echo 123456789012 ;;
  *" describe "*) exit {describe} ;;
esac
"#,
                log = dir.join("calls").display(),
                kept = dir.join("lifecycle").display(),
            );
            let path = dir.join("bin").join(tool);
            std::fs::write(&path, script).unwrap();
            std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        }
        Recorder { dir }
    }

    fn run(&self, script: &str, args: &[&str]) -> Output {
        let path = format!("{}:{}", self.dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        Command::new(root().join("deploy").join(script))
            .args(args)
            .env("PATH", path)
            .env_remove("FERRY_PROJECT")
            .env_remove("FERRY_REGION")
            .env_remove("FERRY_IMAGE")
            .env_remove("FERRY_TASK_TIMEOUT")
            .output()
            .expect("run the deploy script")
    }

    /// The commands the stand-ins received, `%q`-quoted, one per line.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// The lifecycle files `gcloud storage buckets update gs://BUCKET` was given, by bucket.
    fn lifecycles(&self) -> BTreeMap<String, Value> {
        let mut kept = BTreeMap::new();
        for entry in std::fs::read_dir(self.dir.join("lifecycle")).into_iter().flatten() {
            let path = entry.unwrap().path();
            let bucket = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            kept.insert(bucket, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display())));
        }
        kept
    }

    /// A config directory of this recorder's, holding `files` (name, text).
    fn configs(&self, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.join("configs");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Commands of a printed script, each re-split into words by bash and `%q`-quoted like the
/// recorder does, so both sides compare word for word. `vars` (`NAME=value` lines) set the
/// variables the commands use to the values a real run looked up or made.
fn words_of(printed: &str, vars: &[String]) -> Vec<String> {
    let mut script = String::from("set -e\n");
    for v in vars {
        script.push_str(v);
        script.push('\n');
    }
    script.push_str("show() { printf '%s' \"$1\"; shift; for a in \"$@\"; do printf ' %q' \"$a\"; done; echo; }\n");
    for line in printed.lines() {
        if line.starts_with("gcloud ") || line.starts_with("bq ") {
            script.push_str("show ");
            script.push_str(line);
            script.push('\n');
        }
    }
    let out = Command::new("bash").arg("-c").arg(&script).output().expect("bash");
    assert!(out.status.success(), "the printed commands are not valid shell:\n{printed}\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// What a real run printed for the values it looked up or made (`PROJECT_NUMBER=…`,
/// `LIFECYCLE_DIR=…`), which a dry run prints as variables.
fn assignments(real: &Output) -> Vec<String> {
    String::from_utf8_lossy(&real.stdout)
        .lines()
        .filter(|l| l.split_once('=').is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')))
        .map(str::to_owned)
        .collect()
}

/// The files a printed script writes as `cat >"${LIFECYCLE_DIR}/NAME.json" <<'EOF'` … `EOF`,
/// parsed, by NAME.
fn heredocs(printed: &str) -> BTreeMap<String, Value> {
    let mut files = BTreeMap::new();
    let mut lines = printed.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("cat >\"${LIFECYCLE_DIR}/").and_then(|l| l.strip_suffix(".json\" <<'EOF'")) {
            let text = lines.by_ref().take_while(|l| *l != "EOF").collect::<Vec<_>>().join("\n");
            files.insert(name.to_owned(), serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{printed}")));
        }
    }
    files
}

const PROJECT_NUMBER: &str = "PROJECT_NUMBER=123456789012";

const BASE: &[&str] = &["--project", "acme-data", "--region", "europe-west1"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

/// A config in component form whose export is staged in a bucket.
const STAGED: &str = r#"{
  "exports": [
    {
      "name": "orders_daily",
      "source": {"type": "bigquery_export", "table": "warehouse.orders", "format": "CSV", "compression": "GZIP"},
      "destination": {"type": "sftp", "host": "sftp.partner.example", "username": "acme", "password_env": "SFTP_PASSWORD",
                      "known_hosts_file": "/secrets/known-hosts/known_hosts", "path": "/inbound/orders"}
    }
  ],
  "staging": {"bucket": "acme-staging", "expiration_days": 30, "cleanup": "after_delivery"},
  "metadata_table": "acme-data.ops.export_metadata"
}"#;

/// A config in the older seed form: a bucket, and exports as a map.
const SEED: &str = r#"{
  "gcs_bucket": "acme-exports",
  "gcs_expiration_days": 30,
  "cloud_run_url": "https://ferry-123456789012.europe-west1.run.app",
  "sftp": {"host": "sftp.partner.example", "port": 22, "username": "acme", "directory": "/uploads"},
  "exports": {
    "product_data": {"query": "SELECT * FROM `acme-data.shop.products` WHERE DATE(created_at) = '{date}'", "format": "CSV", "compression": "GZIP"}
  }
}"#;

/// The examples, and a config with a staging bucket.
fn examples_and_staged(r: &Recorder) -> PathBuf {
    let dir = r.configs(&[("staged.json", STAGED)]);
    for entry in std::fs::read_dir(root().join("configs/examples")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn dry_runs_print_exactly_the_commands_a_real_run_executes() {
    let configs = Recorder::new();
    let examples = examples_and_staged(&configs);
    let image = "europe-west1-docker.pkg.dev/acme-data/ferry/ferry:0123abc";
    let extra = [
        "--config-dir",
        examples.to_str().unwrap(),
        "--image",
        image,
        "--secret",
        "SFTP_PASSWORD=sftp-password",
        "--secret",
        "/secrets/known-hosts/known_hosts=sftp-known-hosts:3",
        "--read-dataset",
        "acme-data:inventory",
        "--github-repo",
        "acme/ferry",
    ];
    for script in ["iam.sh", "bucket.sh", "service.sh", "pubsub.sh", "scheduler.sh", "github-wif.sh", "all.sh"] {
        let dry = Recorder::new();
        let mut a = args(&extra);
        a.push("--dry-run");
        let printed = dry.run(script, &a);
        assert!(printed.status.success(), "{script} --dry-run: {}", text(&printed));
        assert!(dry.calls().is_empty(), "{script} --dry-run ran {:?}", dry.calls());
        let printed = String::from_utf8_lossy(&printed.stdout).into_owned();

        let real = Recorder::new();
        let out = real.run(script, &args(&extra));
        assert!(out.status.success(), "{script}: {}", text(&out));
        // The real run also asks (describe) before creating; only changes are compared.
        let changes: Vec<String> = real.calls().into_iter().filter(|c| !c.contains(" describe ")).collect();
        let mut vars = vec![PROJECT_NUMBER.to_owned()];
        vars.extend(assignments(&out));
        assert_eq!(words_of(&printed, &vars), changes, "{script}: printed vs run:\n{printed}");
        // And the files it writes, as the dry run shows them.
        assert_eq!(heredocs(&printed), real.lifecycles(), "{script}: lifecycle files printed vs given:\n{printed}");
        assert!(!changes.is_empty(), "{script} ran nothing");
    }
}

/// On a second deployment, what exists is updated with the command the dry run names for it.
#[test]
fn existing_subscriptions_and_jobs_are_updated_as_the_dry_run_says() {
    let examples = root().join("configs/examples");
    for script in ["pubsub.sh", "scheduler.sh"] {
        let a = args(&["--config-dir", examples.to_str().unwrap()]);
        let dry = Recorder::existing();
        let mut d = a.clone();
        d.push("--dry-run");
        let printed = dry.run(script, &d);
        assert!(printed.status.success(), "{script}: {}", text(&printed));
        let updates: String = String::from_utf8_lossy(&printed.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("# if it exists, instead: "))
            .map(|l| format!("{l}\n"))
            .collect();
        let real = Recorder::existing();
        let out = real.run(script, &a);
        assert!(out.status.success(), "{script}: {}", text(&out));
        let ran: Vec<String> = real.calls().into_iter().filter(|c| c.contains(" update ")).collect();
        assert!(real.calls().iter().all(|c| !c.contains(" create ")), "{script} created what exists: {:?}", real.calls());
        assert_eq!(words_of(&updates, &[PROJECT_NUMBER.to_owned()]), ran, "{script}");
        assert!(!ran.is_empty(), "{script} updated nothing");
    }
}

#[test]
fn the_dry_run_output_is_the_deployment_described_in_the_readme() {
    let r = Recorder::new();
    let examples = root().join("configs/examples");
    let out = r.run(
        "all.sh",
        &args(&[
            "--config-dir",
            examples.to_str().unwrap(),
            "--image",
            "europe-west1-docker.pkg.dev/acme-data/ferry/ferry:0123abc",
            "--secret",
            "SFTP_PASSWORD=sftp-password",
            "--dry-run",
        ]),
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    let has = |needle: &str| assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    // Lookups stay variables in a dry run: no credentials needed.
    has(r#"PROJECT_NUMBER="$(gcloud projects describe acme-data '--format=value(projectNumber)')""#);
    // Least privilege, from the configs: read on the source datasets, edit on the metadata dataset.
    has("bq add-iam-policy-binding --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/bigquery.dataViewer acme-data:shop");
    has("bq add-iam-policy-binding --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/bigquery.dataViewer acme-data:prod_staging");
    has("bq add-iam-policy-binding --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/bigquery.dataViewer acme-data:billing");
    has("bq add-iam-policy-binding --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/bigquery.dataEditor acme-data:ops");
    has("gcloud secrets add-iam-policy-binding sftp-password --project=acme-data --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/secretmanager.secretAccessor");
    // Storage Read sessions (`read_api: auto`, the default, or `storage`), on the project.
    has("gcloud projects add-iam-policy-binding acme-data --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/bigquery.readSessionUser");
    assert!(!s.contains("roles/owner") && !s.contains("roles/editor") && !s.contains("roles/bigquery.admin"), "{s}");
    // A private service that checks the push token itself.
    has("--no-allow-unauthenticated");
    has(
        r#""--set-env-vars=FERRY_PUSH_AUDIENCE=https://ferry-${PROJECT_NUMBER}.europe-west1.run.app,FERRY_PUSH_SERVICE_ACCOUNT=ferry-push@acme-data.iam.gserviceaccount.com,GOOGLE_CLOUD_PROJECT=acme-data,FERRY_CLOUD_RUN_JOB=projects/acme-data/locations/europe-west1/jobs/ferry-run""#,
    );
    has("--set-secrets=SFTP_PASSWORD=sftp-password:latest");
    has("gcloud run services add-iam-policy-binding ferry --project=acme-data --region=europe-west1 --member=serviceAccount:ferry-push@acme-data.iam.gserviceaccount.com --role=roles/run.invoker");
    // The job that runs long exports: `ferry run`, as the runtime identity, which alone may start it.
    has("gcloud run jobs deploy ferry-run --project=acme-data --region=europe-west1 --image=europe-west1-docker.pkg.dev/acme-data/ferry/ferry:0123abc --service-account=ferry-runtime@acme-data.iam.gserviceaccount.com --args=run --tasks=1 --max-retries=3 --task-timeout=24h");
    has("gcloud run jobs add-iam-policy-binding ferry-run --project=acme-data --region=europe-west1 --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/run.jobsExecutorWithOverrides");
    // Push subscription with OIDC, bounded retries, dead letters.
    has(
        r#"gcloud pubsub subscriptions create ferry-push --topic=ferry-trigger --project=acme-data "--push-endpoint=https://ferry-${PROJECT_NUMBER}.europe-west1.run.app/" --push-auth-service-account=ferry-push@acme-data.iam.gserviceaccount.com"#,
    );
    has("--dead-letter-topic=ferry-trigger-dead-letter --max-delivery-attempts=5");
    // One scheduler job per schedule entry, publishing the message ferry reads.
    has(
        r#"gcloud scheduler jobs create pubsub ferry-schedules-weekly-full --project=acme-data --location=europe-west1 '--schedule=0 3 * * 0' --time-zone=Europe/London --topic=ferry-trigger '--message-body={"config":"schedules","exports":["shopify_customers"],"full":true}'"#,
    );
    has(
        r#"gcloud scheduler jobs create pubsub ferry-incremental-hourly --project=acme-data --location=europe-west1 '--schedule=5 * * * *' --time-zone=Etc/UTC --topic=ferry-trigger '--message-body={"config":"incremental"}'"#,
    );
}

#[test]
fn ci_deploys_a_revision_without_touching_iam() {
    let r = Recorder::new();
    let out =
        r.run("service.sh", &args(&["--image", "europe-west1-docker.pkg.dev/acme-data/ferry/ferry:1", "--revision-only", "--dry-run"]));
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("gcloud run deploy ferry "), "{s}");
    // The job gets the same image, so that it knows every export the service hands it.
    let job = s.lines().find(|l| l.starts_with("gcloud run jobs deploy ferry-run ")).unwrap_or_else(|| panic!("no job in:\n{s}"));
    assert!(job.contains(" --image=europe-west1-docker.pkg.dev/acme-data/ferry/ferry:1 "), "{job}");
    assert!(!s.contains("add-iam-policy-binding"), "{s}");
}

/// The job runs `ferry run` with the service's image, identity, variables and secrets; the
/// runtime identity may start it with overrides (one grant, on the job only), and the service
/// is told its name. The job is deployed before the service that names it.
#[test]
fn the_service_gets_a_job_it_may_start_and_knows_its_name() {
    let image = "europe-west1-docker.pkg.dev/acme-data/ferry/ferry:0123abc";
    let r = Recorder::new();
    let out = r.run("service.sh", &args(&["--image", image, "--secret", "SFTP_PASSWORD=sftp-password", "--task-timeout", "36h"]));
    assert!(out.status.success(), "{}", text(&out));
    let calls = r.calls();
    let find = |prefix: &str| -> (usize, String) {
        let found: Vec<(usize, &String)> = calls.iter().enumerate().filter(|(_, c)| c.starts_with(prefix)).collect();
        assert_eq!(found.len(), 1, "expected one {prefix:?} in {calls:#?}");
        (found[0].0, found[0].1.clone())
    };
    // The recorder's words with its `%q` escapes (`\,`) taken out.
    let words = |c: &str| -> Vec<String> { c.split(' ').map(|w| w.replace('\\', "")).collect() };
    let env = "--set-env-vars=FERRY_PUSH_AUDIENCE=https://ferry-123456789012.europe-west1.run.app,FERRY_PUSH_SERVICE_ACCOUNT=ferry-push@acme-data.iam.gserviceaccount.com,GOOGLE_CLOUD_PROJECT=acme-data,FERRY_CLOUD_RUN_JOB=projects/acme-data/locations/europe-west1/jobs/ferry-run";

    let (job_at, job) = find("gcloud run jobs deploy ferry-run ");
    for flag in [
        format!("--image={image}"),
        "--service-account=ferry-runtime@acme-data.iam.gserviceaccount.com".to_owned(),
        "--args=run".to_owned(),
        "--tasks=1".to_owned(),
        "--max-retries=3".to_owned(),
        "--task-timeout=36h".to_owned(),
        format!("{env},FERRY_LEASE_WAIT_SECONDS=300"),
        "--set-secrets=SFTP_PASSWORD=sftp-password:latest".to_owned(),
    ] {
        assert!(words(job.as_str()).contains(&flag), "the job lacks {flag}: {job}");
    }
    let (service_at, service) = find("gcloud run deploy ferry ");
    assert!(words(service.as_str()).iter().any(|w| w == env), "the service is not told the job: {service}");
    assert!(job_at < service_at, "the job is deployed after the service: {calls:#?}");

    let (grant_at, grant) = find("gcloud run jobs add-iam-policy-binding ferry-run ");
    assert_eq!(
        grant,
        "gcloud run jobs add-iam-policy-binding ferry-run --project=acme-data --region=europe-west1 --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/run.jobsExecutorWithOverrides --quiet"
    );
    assert!(grant_at > job_at, "the grant comes before the job exists: {calls:#?}");
    let on_job: Vec<&String> = calls.iter().filter(|c| c.starts_with("gcloud run jobs add-iam-policy-binding")).collect();
    assert_eq!(on_job.len(), 1, "one grant on the job, no more: {on_job:#?}");
}

#[test]
fn bad_input_stops_before_anything_runs() {
    let cases: &[(&str, Vec<&str>, &str)] = &[
        ("iam.sh", vec!["--region", "europe-west1"], "--project is required"),
        ("iam.sh", vec!["--project", "acme-data"], "--region is required"),
        ("iam.sh", args(&["--colour", "red"]), "unknown argument '--colour'"),
        ("iam.sh", vec!["--project", "Acme Data!", "--region", "europe-west1"], "--project 'Acme Data!' is not a Google Cloud project id"),
        ("iam.sh", args(&["--secret", "sftp-password"]), "--secret 'sftp-password' must be ENV_VAR=secret[:version]"),
        ("iam.sh", args(&["--read-dataset", "inventory"]), "--read-dataset 'inventory' must be PROJECT:DATASET"),
        ("service.sh", args(&[]), "--image is required"),
        ("all.sh", args(&[]), "--image is required"),
        ("github-wif.sh", args(&[]), "--github-repo OWNER/NAME is required"),
        ("iam.sh", args(&["--project"]), "--project needs a value"),
        ("service.sh", args(&["--image", "i:1", "--task-timeout", "169h"]), "--task-timeout '169h' must be a duration from 1s to 168h"),
        ("service.sh", args(&["--image", "i:1", "--task-timeout", "1d"]), "--task-timeout '1d' must be a duration from 1s to 168h"),
    ];
    for (script, a, expected) in cases {
        let r = Recorder::new();
        let out = r.run(script, a);
        assert_eq!(out.status.code(), Some(2), "{script} {a:?}: {}", text(&out));
        assert!(text(&out).contains(expected), "{script} {a:?}: expected {expected:?} in {}", text(&out));
        assert!(r.calls().is_empty(), "{script} {a:?} ran {:?}", r.calls());
    }
}

#[test]
fn a_config_that_is_not_json_stops_the_scripts_that_read_configs() {
    for script in ["iam.sh", "bucket.sh", "scheduler.sh", "all.sh"] {
        let r = Recorder::new();
        let dir = r.dir.join("configs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(root().join("configs/examples/schedules.json"), dir.join("a.json")).unwrap();
        std::fs::write(dir.join("broken.json"), "{\"exports\": [").unwrap();
        let out = r.run(script, &args(&["--config-dir", dir.to_str().unwrap(), "--image", "i:1"]));
        assert_eq!(out.status.code(), Some(2), "{script}: {}", text(&out));
        assert!(text(&out).contains("cannot read") && text(&out).contains("broken.json"), "{script}: {}", text(&out));
        let changes: Vec<String> = r.calls().into_iter().filter(|c| !c.contains(" describe ")).collect();
        assert!(changes.is_empty(), "{script} changed things before reading every config: {changes:?}");
    }
}

#[test]
fn a_config_without_schedules_creates_no_jobs() {
    let r = Recorder::new();
    let dir = r.dir.join("configs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root().join("configs/default.json"), dir.join("default.json")).unwrap();
    let out = r.run("scheduler.sh", &args(&["--config-dir", dir.to_str().unwrap()]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(r.calls().is_empty(), "{:?}", r.calls());
    assert!(text(&out).contains("nothing to schedule"), "{}", text(&out));
}

/// Runs bucket.sh over `files` for real and as a dry run, and checks that the dry run prints
/// the commands the real run executed and the lifecycle files it gave them. Returns the real
/// run's commands, its temporary directory written as `DIR`, and the lifecycle files by bucket.
fn bucket_sh(files: &[(&str, &str)]) -> (Vec<String>, BTreeMap<String, Value>) {
    let real = Recorder::new();
    let dir = real.configs(files);
    let a = args(&["--config-dir", dir.to_str().unwrap()]);
    let out = real.run("bucket.sh", &a);
    assert!(out.status.success(), "{}", text(&out));

    let dry = Recorder::new();
    let mut d = a.clone();
    d.push("--dry-run");
    let printed = dry.run("bucket.sh", &d);
    assert!(printed.status.success(), "{}", text(&printed));
    assert!(dry.calls().is_empty(), "the dry run ran {:?}", dry.calls());
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    let made = assignments(&out);
    assert_eq!(words_of(&printed, &made), real.calls(), "printed vs run:\n{printed}");
    let lifecycles = real.lifecycles();
    assert_eq!(heredocs(&printed), lifecycles, "the dry run shows other lifecycle files than gcloud was given:\n{printed}");

    let dir = made.iter().find_map(|v| v.strip_prefix("LIFECYCLE_DIR=")).unwrap_or("-").to_owned();
    (real.calls().into_iter().map(|c| c.replace(&dir, "DIR")).collect(), lifecycles)
}

fn grant(bucket: &str) -> String {
    format!("gcloud storage buckets add-iam-policy-binding gs://{bucket} --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/storage.objectAdmin --condition=None --quiet")
}

fn update(bucket: &str) -> String {
    format!("gcloud storage buckets update gs://{bucket} --lifecycle-file=DIR/{bucket}.json")
}

fn delete_after(days: u32, prefix: Option<&str>) -> Value {
    match prefix {
        Some(p) => json!({"action": {"type": "Delete"}, "condition": {"age": days, "matchesPrefix": [p]}}),
        None => json!({"action": {"type": "Delete"}, "condition": {"age": days}}),
    }
}

/// Component form: the rule covers the configured prefix (`ferry/` by default, a `/` added as
/// ferry adds it), and the runtime identity may write, read and delete the bucket's objects.
#[test]
fn a_staging_bucket_gets_a_delete_rule_on_its_prefix_and_the_runtime_identity_access() {
    let weekly = r#"{"exports": [], "metadata_table": "acme-data.ops.export_metadata",
        "staging": {"bucket": "acme-reports", "prefix": "exports/weekly", "expiration_days": 7, "cleanup": "keep"}}"#;
    let (calls, lifecycles) = bucket_sh(&[("staged.json", STAGED), ("weekly.json", weekly)]);
    assert_eq!(calls, [grant("acme-reports"), update("acme-reports"), grant("acme-staging"), update("acme-staging")]);
    assert_eq!(lifecycles["acme-staging"], json!({"rule": [delete_after(30, Some("ferry/"))]}));
    assert_eq!(lifecycles["acme-reports"], json!({"rule": [delete_after(7, Some("exports/weekly/"))]}));
    assert_eq!(lifecycles.len(), 2);
}

/// Seed form: its files are wherever the caller's EXPORT DATA put them, so the rule covers the
/// whole bucket.
#[test]
fn a_seed_config_gets_a_delete_rule_on_the_whole_bucket() {
    let (calls, lifecycles) = bucket_sh(&[("seed.json", SEED)]);
    assert_eq!(calls, [grant("acme-exports"), update("acme-exports")]);
    assert_eq!(lifecycles, BTreeMap::from([("acme-exports".to_owned(), json!({"rule": [delete_after(30, None)]}))]));
}

/// A bucket has one lifecycle configuration: configs that share a bucket get one, with a rule
/// per prefix, set once. A bucket no config gives an expiration keeps its own.
#[test]
fn configs_sharing_a_bucket_get_one_lifecycle_configuration_with_a_rule_per_prefix() {
    let invoices = r#"{"exports": [], "metadata_table": "acme-data.ops.export_metadata",
        "staging": {"bucket": "acme-staging", "prefix": "invoices/", "expiration_days": 14}}"#;
    let same = r#"{"exports": [], "metadata_table": "acme-data.ops.export_metadata",
        "staging": {"bucket": "acme-staging", "prefix": "ferry/", "expiration_days": 30}}"#;
    let no_expiration = r#"{"exports": [], "metadata_table": "acme-data.ops.export_metadata",
        "staging": {"bucket": "acme-archive", "cleanup": "after_delivery"}}"#;
    let (calls, lifecycles) =
        bucket_sh(&[("staged.json", STAGED), ("invoices.json", invoices), ("same.json", same), ("archive.json", no_expiration)]);
    assert_eq!(calls, [grant("acme-archive"), grant("acme-staging"), update("acme-staging")]);
    assert_eq!(
        lifecycles,
        BTreeMap::from([(
            "acme-staging".to_owned(),
            json!({"rule": [delete_after(30, Some("ferry/")), delete_after(14, Some("invoices/"))]})
        )])
    );
}

#[test]
fn a_config_without_staging_touches_no_bucket() {
    for dry in [false, true] {
        let r = Recorder::new();
        let dir = r.configs(&[]);
        std::fs::copy(root().join("configs/default.json"), dir.join("default.json")).unwrap();
        std::fs::copy(root().join("configs/examples/schedules.json"), dir.join("schedules.json")).unwrap();
        let mut a = args(&["--config-dir", dir.to_str().unwrap()]);
        if dry {
            a.push("--dry-run");
        }
        let out = r.run("bucket.sh", &a);
        assert!(out.status.success(), "{}", text(&out));
        assert!(r.calls().is_empty(), "{:?}", r.calls());
        assert!(out.stdout.is_empty(), "{}", text(&out));
        assert!(text(&out).contains("no config under") && text(&out).contains("nothing to do"), "{}", text(&out));
    }
}

/// Rules of one bucket that would delete another config's files before its own expiration, and
/// values that are no bucket or no expiration, stop bucket.sh before it changes anything.
#[test]
fn staging_rules_that_cut_each_other_short_stop_before_anything_runs() {
    let staging = |bucket: &str, prefix: &str, days: &str| {
        format!(r#"{{"exports": [], "staging": {{"bucket": {bucket:?}, "prefix": {prefix:?}, "expiration_days": {days}}}}}"#)
    };
    // The seed form's rule covers the whole bucket: its 7 days would cut staged.json's 30 short.
    let seed_7_days = SEED.replace(r#""gcs_bucket": "acme-exports""#, r#""gcs_bucket": "acme-staging""#).replace(": 30,", ": 7,");
    let cases: &[(String, &str)] = &[
        (
            seed_7_days,
            "seed.json deletes what is under gs://acme-staging/ after 7 days, \
             so what staged.json stages under gs://acme-staging/ferry/ would not last its 30 days",
        ),
        (
            staging("acme-staging", "ferry/", "45"),
            "staged.json deletes what is under gs://acme-staging/ferry/ after 30 days, \
             so what seed.json stages under gs://acme-staging/ferry/ would not last its 45 days",
        ),
        (staging("acme-staging", "ferry/orders/", "60"), "would not last its 60 days"),
        (staging("gs://acme-staging", "ferry/", "30"), r#"seed.json: the staging bucket "gs://acme-staging" is not a bucket name"#),
        (staging("acme-other", "ferry/", "0"), "seed.json: the expiration 0 is not a whole number of days from 1 to 3650"),
        (staging("acme-other", "ferry/", r#""30""#), r#"seed.json: the expiration "30" is not a whole number of days"#),
    ];
    for (other, expected) in cases {
        let r = Recorder::new();
        let dir = r.configs(&[("staged.json", STAGED), ("seed.json", other.as_str())]);
        let out = r.run("bucket.sh", &args(&["--config-dir", dir.to_str().unwrap()]));
        assert_eq!(out.status.code(), Some(2), "{other}: {}", text(&out));
        assert!(text(&out).contains(expected), "{other}: expected {expected:?} in {}", text(&out));
        assert!(r.calls().is_empty(), "{other}: ran {:?}", r.calls());
    }
}

/// A staged export reads its table with EXPORT DATA as the runtime identity, which needs to read
/// the dataset like any BigQuery source.
#[test]
fn a_staged_sources_dataset_is_readable_by_the_runtime_identity() {
    let r = Recorder::new();
    let dir = r.configs(&[("staged.json", STAGED)]);
    let out = r.run("iam.sh", &args(&["--config-dir", dir.to_str().unwrap(), "--dry-run"]));
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("bq add-iam-policy-binding --member=serviceAccount:ferry-runtime@acme-data.iam.gserviceaccount.com --role=roles/bigquery.dataViewer acme-data:warehouse"),
        "{s}"
    );
}

/// The Airflow example compiles, calls /transfer and /verify, and, run against stand-ins for
/// Airflow, google-auth and requests (airflow_dag.py beside this file), builds one group per
/// export and fails its tasks on the answers it should. Python's bytecode goes to a temporary
/// directory, not beside the DAG.
#[test]
fn the_airflow_dag_compiles_and_judges_ferrys_answers() {
    let dag = root().join("deploy/airflow/ferry_staged_exports.py");
    let cache = std::env::temp_dir().join(ferry_testkit::unique("ferry-pycache"));
    let python = |args: &[&str]| {
        let out = Command::new("python3")
            .arg("-X")
            .arg(format!("pycache_prefix={}", cache.display()))
            .args(args)
            .current_dir(root())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("run python3");
        (out.status.success(), text(&out))
    };
    let compiled = python(&["-m", "py_compile", dag.to_str().unwrap()]);
    let judged = python(&[root().join("tests/deploy/airflow_dag.py").to_str().unwrap(), dag.to_str().unwrap()]);
    std::fs::remove_dir_all(&cache).ok();
    assert!(compiled.0, "py_compile: {}", compiled.1);
    assert!(judged.0, "{}", judged.1);
    assert!(!root().join("deploy/airflow/__pycache__").exists() && !root().join("tests/deploy/__pycache__").exists());

    let source = std::fs::read_to_string(&dag).unwrap();
    for needle in
        ["\"/transfer\"", "\"/verify\"", "fetch_id_token(", "TRANSFER_TIMEOUT_SECONDS = 1800", "\"slack_webhook_url\"", "TaskGroup("]
    {
        assert!(source.contains(needle), "the DAG lacks {needle}");
    }
}

/// `--caller-account` (an Airflow worker calling `/transfer` and `/verify`): the account may
/// invoke the service, and the service accepts its ID tokens; an address that is not one
/// account's email stops the script before anything runs.
#[test]
fn a_caller_account_may_invoke_and_is_accepted_by_the_service() {
    let image = "europe-west1-docker.pkg.dev/acme-data/ferry/ferry:0123abc";
    let airflow = "airflow@acme-data.iam.gserviceaccount.com";
    let r = Recorder::new();
    let out = r.run("service.sh", &args(&["--image", image, "--caller-account", airflow]));
    assert!(out.status.success(), "{}", text(&out));
    let calls = r.calls();
    let service = calls.iter().find(|c| c.starts_with("gcloud run deploy ferry ")).expect("the service is deployed");
    assert!(service.contains(&format!("FERRY_CALLER_SERVICE_ACCOUNTS={airflow}")), "{service}");
    let invokers: Vec<&String> = calls.iter().filter(|c| c.contains("--role=roles/run.invoker")).collect();
    assert!(invokers.iter().any(|c| c.contains(&format!("--member=serviceAccount:{airflow}"))), "{invokers:#?}");
    assert_eq!(invokers.len(), 2, "the push account and the caller: {invokers:#?}");

    let r = Recorder::new();
    let out = r.run("service.sh", &args(&["--image", image, "--caller-account", "a@x.com,b@y.com"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("must be one service account's email"), "{}", text(&out));
    assert!(r.calls().is_empty(), "nothing ran: {:?}", r.calls());
}
