//! Logs: readable text on stderr for the CLI; one JSON object per line on stdout for the
//! service, in the shape Cloud Logging reads (`severity`, `message`, plus the fields of the
//! event and of its spans: `message_id`, `run_id`, `export`, ...).

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Text logs on stderr, `warn` and above unless `FERRY_LOG` says otherwise.
pub fn init_text() {
    init(false, None);
}

/// JSON lines on stdout, `info` and above unless `FERRY_LOG` says otherwise.
pub fn init_json() {
    init(true, None);
}

/// JSON lines on stdout (`json`) or text on stderr, at `level` (a filter such as `debug`) when
/// given, else as `FERRY_LOG` says, else `info` (JSON) or `warn` (text).
pub fn init(json: bool, level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| if json { "info" } else { "warn" }.into()),
    };
    if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .fmt_fields(JsonFields::new())
            .event_format(CloudLogging)
            .with_writer(std::io::stdout)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Formats an event as a Cloud Logging structured entry.
pub struct CloudLogging;

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut entry = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(fields.as_str()) {
                        entry.extend(o);
                    }
                }
            }
        }
        event.record(&mut Fields(&mut entry));
        let meta = event.metadata();
        entry.insert("severity".into(), Value::from(severity(meta.level())));
        entry.insert("time".into(), Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        entry.insert("target".into(), Value::from(meta.target()));
        entry.entry("message").or_insert(Value::from(""));
        writeln!(writer, "{}", Value::Object(entry))
    }
}
