use std::time::Duration;

use ferry_testkit::{eventually, mails_to, slack_posts, slack_url, stack, unique};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

fn starttls(ca_var: &str, password: &str) -> AsyncSmtpTransport<Tokio1Executor> {
    let s = stack();
    let ca = Certificate::from_pem(s.file(ca_var).as_bytes()).expect("CA");
    let tls = TlsParameters::builder("localhost".into()).add_root_certificate(ca).build_rustls().expect("tls");
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.var("FERRY_SMTP_HOST"))
        .port(s.var("FERRY_SMTP_TLS_PORT").parse().expect("port"))
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(s.var("FERRY_SMTP_USER"), password.into()))
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn mail(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("ferry <ferry@example.test>".parse::<Mailbox>().expect("from"))
        .to(to.parse().expect("to"))
        .subject(subject)
        .body("3 rows delivered".to_owned())
        .expect("message")
}

#[tokio::test]
async fn mail_is_captured_over_starttls_with_auth() {
    let to = format!("{}@example.test", unique("ops"));
    let password = stack().file("FERRY_SMTP_PASSWORD_FILE");
    starttls("FERRY_SMTP_CA", &password).send(mail(&to, "ferry smoke")).await.expect("send");
    let got = mails_to(&to);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.record["tls"], true);
    assert_eq!(m.record["auth_user"], stack().var("FERRY_SMTP_USER"));
    assert_eq!(m.header("Subject"), Some("ferry smoke"), "{}", m.raw);
    assert_eq!(m.body.trim_end(), "3 rows delivered", "{}", m.raw);
}

#[tokio::test]
async fn mail_is_captured_over_implicit_tls_with_auth() {
    let s = stack();
    let to = format!("{}@example.test", unique("ops"));
    let ca = Certificate::from_pem(s.file("FERRY_SMTP_CA").as_bytes()).expect("CA");
    let tls = TlsParameters::builder("localhost".into()).add_root_certificate(ca).build_rustls().expect("tls");
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.var("FERRY_SMTP_HOST"))
        .port(s.var("FERRY_SMTP_IMPLICIT_TLS_PORT").parse().expect("port"))
        .tls(Tls::Wrapper(tls))
        .credentials(Credentials::new(s.var("FERRY_SMTP_USER"), s.file("FERRY_SMTP_PASSWORD_FILE")))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport.send(mail(&to, "ferry smoke implicit")).await.expect("send");
    let got = mails_to(&to);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].record["auth_user"], s.var("FERRY_SMTP_USER"));
    assert_eq!(got[0].header("Subject"), Some("ferry smoke implicit"));
}

#[tokio::test]
async fn untrusted_certificate_and_wrong_password_are_refused() {
    let to = format!("{}@example.test", unique("ops"));
    let password = stack().file("FERRY_SMTP_PASSWORD_FILE");
    let err = starttls("FERRY_SMTP_OTHER_CA", &password).send(mail(&to, "x")).await.expect_err("untrusted");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    let err = starttls("FERRY_SMTP_CA", "wrong").send(mail(&to, "x")).await.expect_err("bad password");
    assert!(err.to_string().contains("535"), "{err}");
    assert!(mails_to(&to).is_empty());
}

#[tokio::test]
async fn slack_post_is_captured() {
    let id = unique("slack");
    let body = serde_json::json!({"text": "export finished: 3 rows"});
    let resp = reqwest::Client::new().post(slack_url(&id)).json(&body).send().await.expect("post");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "ok");
    let posts =
        eventually(Duration::from_secs(5), "the captured post", || async { Some(slack_posts(&id)).filter(|p| !p.is_empty()) }).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(posts[0]["body"].as_str().expect("body")).expect("json"), body);
}
