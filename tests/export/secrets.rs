//! No `Debug` output of a configuration or client type shows a credential: each is built with
//! sentinel secrets (and a real SFTP login), and its `{:?}` and `{:#?}` are searched for them.

use ferry::components::Registry;
use ferry_core::config::RawConfig;
use ferry_core::Secret;
use ferry_sftp::{SftpSettings, SftpSink};
use ferry_testkit::{stack, TestDir};
use serde_json::json;

const SFTP_PASSWORD: &str = "sentinel-sftp-password-7f3a";
const BQ_TOKEN: &str = "sentinel-bigquery-token-91c2";
const SMTP_PASSWORD: &str = "sentinel-smtp-password-55e0";
const SLACK_URL: &str = "https://hooks.example.com/services/T0/B0/sentinel-slack-2b8d";
const PASSPHRASE: &str = "sentinel-key-passphrase-0c4e";

/// Fails when the debug forms of `value` show any of `secrets`.
fn assert_shows_none(what: &str, value: &dyn std::fmt::Debug, secrets: &[&str]) {
    for text in [format!("{value:?}"), format!("{value:#?}")] {
        for secret in secrets {
            assert!(!text.contains(secret), "{what}'s Debug shows a secret: {text}");
        }
    }
}

#[tokio::test]
async fn no_debug_output_of_a_config_or_client_shows_a_credential() {
    let sentinels = [SFTP_PASSWORD, BQ_TOKEN, SMTP_PASSWORD, SLACK_URL, "sentinel-slack-2b8d", PASSPHRASE];
    let s = stack();
    let export = |name: &str, sftp: serde_json::Value| {
        json!({"name": name, "source": {"type": "bigquery", "table": "shop.orders"},
               "destination": sftp, "timestamp_column": "updated_at", "incremental": true})
    };
    let sftp = |auth: serde_json::Value| {
        let mut d = json!({"type": "sftp", "host": "sftp.example.com", "username": "acme", "path": "/upload",
                           "host_key_fingerprint": "SHA256:AnxDfrPmOL4De0eahuVc3Rk2UV15ZF6y0jItw/GoFp4",
                           "file": {"name": "{name}_{run_id}.csv"}});
        for (k, v) in auth.as_object().unwrap() {
            d[k] = v.clone();
        }
        d
    };
    let key = s.var("FERRY_SFTP_KEY_FILE");
    let doc = json!({
        "exports": [
            export("by_password", sftp(json!({"password_env": "PARTNER_PW"}))),
            export("by_key", sftp(json!({"private_key_file": key, "private_key_passphrase_env": "KEY_PASS"}))),
        ],
        "metadata_table": "proj-1.ops.export_metadata",
        "bigquery": {"endpoint": "https://bigquery.example.com", "auth": "token_env", "token_env": "BQ_TOKEN"},
        "notifications": {
            "email": {"smtp_host": "smtp.example.com", "username": "mailer", "password_env": "MAIL_PW",
                      "from": "ferry@example.com", "to": ["ops@example.com"]},
            "slack": {}
        }
    });
    let env = |k: &str| {
        let value = match k {
            "PARTNER_PW" => SFTP_PASSWORD,
            "BQ_TOKEN" => BQ_TOKEN,
            "MAIL_PW" => SMTP_PASSWORD,
            "SLACK_WEBHOOK_URL" => SLACK_URL,
            "KEY_PASS" => PASSPHRASE,
            _ => return None,
        };
        Some(value.to_owned())
    };
    let raw = RawConfig::from_json(&doc.to_string()).expect("parses");
    assert_shows_none("RawConfig", &raw, &sentinels);
    let config = raw.validate(&Registry, &env).expect("valid");
    assert_eq!(config.secrets().len(), 5, "every sentinel was resolved into the config");
    assert_shows_none("Config", &config, &sentinels);
    assert_shows_none("Notifications", &config.notifications, &sentinels);
    for x in &config.exports {
        assert_shows_none("ExportSpec", x, &sentinels);
        let settings = x.destination.component.settings::<SftpSettings>().expect("sftp settings");
        assert_shows_none("SftpSettings", settings, &sentinels);
        assert_shows_none("sftp Auth", &settings.auth, &sentinels);
    }

    let bq = ferry::bigquery(&config).expect("client");
    assert_shows_none("BigQuery", &bq, &sentinels);
    let tokens = ferry_google::TokenSource::new(reqwest::Client::new(), ferry_google::Auth::Token(Secret::new(BQ_TOKEN)));
    assert_shows_none("TokenSource", &tokens, &sentinels);
    assert_shows_none("google Auth", &ferry_google::Auth::Token(Secret::new(BQ_TOKEN)), &sentinels);
    assert_shows_none("Secret", &Secret::new(BQ_TOKEN), &sentinels);

    // A connected sink, logged in with the stack's real password.
    let dir = TestDir::create("secrets");
    let password = s.file("FERRY_SFTP_PASSWORD_FILE");
    let settings = SftpSettings {
        host: s.var("FERRY_SFTP_HOST"),
        port: s.var("FERRY_SFTP_PORT").parse().unwrap(),
        username: s.var("FERRY_SFTP_PASSWORD_USER"),
        auth: ferry_sftp::Auth::Password(Secret::new(&password)),
        host_key: ferry_sftp::HostKeyPolicy::Fingerprint(s.var("FERRY_SFTP_FINGERPRINT")),
        directory: dir.remote(),
        timeout: std::time::Duration::from_secs(10),
    };
    assert_shows_none("SftpSettings", &settings, &[password.as_str()]);
    let sink = SftpSink::connect(settings).await.expect("password login");
    assert_shows_none("SftpSink", &sink, &[password.as_str()]);
    sink.close().await;
}
