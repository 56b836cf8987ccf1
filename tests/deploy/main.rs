//! The deploy scripts: what `--dry-run` prints is exactly what a real run executes, and bad
//! input stops them before anything runs.
//!
//! A real run here talks to `gcloud` and `bq` stand-ins that only record their arguments
//! (Google Cloud is not reachable from tests); `projects describe` answers a project number
//! and every other `describe` answers "not found", as for a new project.

use std::path::PathBuf;
use std::process::{Command, Output};

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
case "$*" in
  "projects describe "*) echo 123456789012 ;;
  *" describe "*) exit {describe} ;;
esac
"#,
                log = dir.join("calls").display(),
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
/// recorder does, so both sides compare word for word.
fn words_of(printed: &str, project_number: Option<&str>) -> Vec<String> {
    let mut script = String::from("set -e\n");
    if let Some(n) = project_number {
        script.push_str(&format!("PROJECT_NUMBER={n}\n"));
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

const BASE: &[&str] = &["--project", "acme-data", "--region", "europe-west1"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn dry_runs_print_exactly_the_commands_a_real_run_executes() {
    let examples = root().join("configs/examples");
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
    for script in ["iam.sh", "service.sh", "pubsub.sh", "scheduler.sh", "github-wif.sh", "all.sh"] {
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
        assert_eq!(words_of(&printed, Some("123456789012")), changes, "{script}: printed vs run:\n{printed}");
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
        assert_eq!(words_of(&updates, Some("123456789012")), ran, "{script}");
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
    for script in ["iam.sh", "scheduler.sh", "all.sh"] {
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
