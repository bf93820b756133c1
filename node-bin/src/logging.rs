//! Logs in the seed's shape, or JSON lines.
//!
//! Text (the default), as the seed's DefraDB lines look:
//!
//! ```text
//! 2026-11-25T07:18:17.276-0000, INFO, hypha.cli, Starting P2P node, {"P2P address": "/ip4/0.0.0.0/tcp/9171"}
//! ```
//!
//! that is `timestamp, LEVEL, logger, Message, {fields}` — the fields as a JSON object, left out
//! when there are none. `--log-format json` writes one object per line instead:
//! `{"ts": …, "level": …, "logger": …, "msg": …, "P2P address": …}`. Loggers are the `tracing`
//! targets Hypha's code names (`hypha.cli`, `hypha.node`, `hypha.net`, `hypha.api`); library
//! logs keep their module paths. `--log`/`RUST_LOG` filters them with `tracing`'s directive
//! syntax (`info`, `hypha.net=debug,info`).
//!
//! A field recorded with `?` whose debug text is a JSON array or object (a `Vec<String>`, say)
//! is written as that JSON, so `Address` reads `["/ip4/…"]` as in the seed.

use std::fmt;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::settings::LogFormat;

const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]-0000");

/// Installs the global subscriber writing to stderr. `filter` is a `RUST_LOG`-style directive
/// list.
///
/// # Errors
/// The filter does not parse.
pub(crate) fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("log filter {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Shape(format))
        .try_init()
        .map_err(|e| format!("logging: {e}"))
}

/// The event formatter.
struct Shape(LogFormat);

impl<S, N> FormatEvent<S, N> for Shape
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let ts = OffsetDateTime::now_utc()
            .format(TIMESTAMP)
            .map_err(|_| fmt::Error)?;
        writeln!(
            writer,
            "{}",
            render(self.0, &ts, meta.level().as_str(), meta.target(), fields)
        )
    }
}

/// One line, without its newline.
fn render(format: LogFormat, ts: &str, level: &str, logger: &str, fields: Fields) -> String {
    match format {
        LogFormat::Text => {
            let mut line = format!("{ts}, {level}, {logger}, {}", fields.message);
            if !fields.values.is_empty() {
                line.push_str(", ");
                line.push_str(&spaced_json(&fields.values));
            }
            line
        }
        LogFormat::Json => {
            let mut object = Map::new();
            object.insert("ts".into(), ts.into());
            object.insert("level".into(), level.into());
            object.insert("logger".into(), logger.into());
            object.insert("msg".into(), fields.message.into());
            for (k, v) in fields.values {
                object.entry(k).or_insert(v);
            }
            Value::Object(object).to_string()
        }
    }
}

/// `{"a": 1, "b": ["x"]}`: JSON with the seed's spacing.
fn spaced_json(values: &[(String, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&Value::from(k.as_str()).to_string());
        out.push_str(": ");
        out.push_str(&spaced_value(v));
    }
    out.push('}');
    out
}

fn spaced_value(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(spaced_value).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => spaced_json(
            &map.iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>(),
        ),
        other => other.to_string(),
    }
}

/// The message and the fields of one event, in the order they were recorded.
#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(String, Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.values.push((field.name().into(), value.into()));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.values.push((field.name().into(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.values.push((field.name().into(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.values.push((field.name().into(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.values.push((field.name().into(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
            return;
        }
        let json = match text.as_bytes().first() {
            Some(b'[' | b'{') => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            _ => Value::String(text),
        };
        self.values.push((field.name().into(), json));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(values: Vec<(&str, Value)>) -> Fields {
        Fields {
            message: "Starting P2P node".into(),
            values: values.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }

    #[test]
    fn text_has_the_seed_shape() {
        let ts = "2026-11-25T07:18:17.276-0000";
        let line = render(
            LogFormat::Text,
            ts,
            "INFO",
            "hypha.cli",
            fields(vec![("P2P address", "/ip4/0.0.0.0/tcp/9171".into())]),
        );
        assert_eq!(
            line,
            "2026-11-25T07:18:17.276-0000, INFO, hypha.cli, Starting P2P node, {\"P2P address\": \"/ip4/0.0.0.0/tcp/9171\"}"
        );
        let line = render(
            LogFormat::Text,
            ts,
            "INFO",
            "hypha.node",
            fields(vec![
                ("PeerId", "12D3KooW".into()),
                ("Address", serde_json::json!(["/ip4/0.0.0.0/tcp/9171"])),
            ]),
        );
        assert!(
            line.ends_with("{\"PeerId\": \"12D3KooW\", \"Address\": [\"/ip4/0.0.0.0/tcp/9171\"]}"),
            "{line}"
        );
        let bare = render(LogFormat::Text, ts, "WARN", "hypha.net", fields(vec![]));
        assert!(bare.ends_with("hypha.net, Starting P2P node"), "{bare}");
    }

    #[test]
    fn json_is_one_object() {
        let line = render(
            LogFormat::Json,
            "t",
            "INFO",
            "hypha.cli",
            fields(vec![("n", 3.into())]),
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "Starting P2P node");
        assert_eq!(v["logger"], "hypha.cli");
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn timestamp_format() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        let s = t.format(TIMESTAMP).unwrap();
        assert_eq!(s.len(), "2026-11-25T07:18:17.276-0000".len(), "{s}");
        assert!(s.ends_with("-0000"));
    }
}
