//! The daemons' logs: one line per event on stderr, as text for people or
//! as JSON for ELK and Loki (`--log-format json`).
//!
//! A JSON line carries `timestamp` (RFC 3339, UTC, milliseconds), `level`,
//! `component` (controller, agent), `node` (the agent's node name or
//! `controller<ID>`), `target` (the Rust module), `message`, and the event's
//! own fields: `job_id`, `term`, `peer`, `error`, … (docs/logging.md).

use std::fmt::Write as _;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn parse_level(text: &str) -> Result<Level, String> {
    text.parse::<Level>().map_err(|_| format!("invalid log level '{text}': use error, warn, info, debug or trace"))
}

/// `--log-format` and `--log-level`, checked.
pub type Log = (LogFormat, Level);

/// Sends this process's log events to stderr for the rest of its life.
pub fn init(component: &'static str, node: String, (format, level): Log) {
    // Libraries (openraft, hyper) speak at `warn` and above unless asked
    // for everything with `trace`: their `info` is a developer's detail.
    let filter = tracing_subscriber::filter::filter_fn(move |meta| {
        let ours = meta.target().starts_with("drover");
        *meta.level() <= level && (ours || level == Level::TRACE || *meta.level() <= Level::WARN)
    });
    let layer = Lines { component, node, format }.with_filter(filter);
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

struct Lines {
    component: &'static str,
    node: String,
    format: LogFormat,
}

/// An event's fields, in the order given.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(s)) => self.message = s,
            (name, value) => self.rest.push((name, value)),
        }
    }
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line =
            render(self.format, crate::jobs::now_ms(), meta.level(), self.component, &self.node, meta.target(), fields);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

fn render(
    format: LogFormat,
    now_ms: u64,
    level: &Level,
    component: &str,
    node: &str,
    target: &str,
    fields: Fields,
) -> String {
    let timestamp = format!("{}.{:03}Z", drover_core::time::format_timestamp(now_ms / 1000), now_ms % 1000);
    match format {
        LogFormat::Json => {
            let mut o = serde_json::Map::new();
            o.insert("timestamp".into(), timestamp.into());
            o.insert("level".into(), level.as_str().into());
            o.insert("component".into(), component.into());
            o.insert("node".into(), node.into());
            o.insert("target".into(), target.into());
            o.insert("message".into(), fields.message.into());
            for (k, v) in fields.rest {
                o.insert(k.into(), v);
            }
            let mut line = serde_json::Value::Object(o).to_string();
            line.push('\n');
            line
        }
        LogFormat::Text => {
            let mut line = format!("{timestamp} {:>5} {component} {node}: {}", level.as_str(), fields.message);
            for (k, v) in fields.rest {
                match v {
                    serde_json::Value::String(s) => write!(line, " {k}={s}"),
                    v => write!(line, " {k}={v}"),
                }
                .expect("writing to a String cannot fail");
            }
            line.push('\n');
            line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields { message: "job ended".into(), rest: vec![("job_id", 42u64.into()), ("error", "exit 3".into())] }
    }

    #[test]
    fn json_lines_carry_component_node_and_fields() {
        let line = render(
            LogFormat::Json,
            1_795_000_000_123,
            &Level::WARN,
            "agent",
            "node1",
            "drover_agent::daemon",
            fields(),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2026-11-18T11:06:40.123Z");
        assert_eq!(
            (v["level"].as_str(), v["component"].as_str(), v["node"].as_str()),
            (Some("WARN"), Some("agent"), Some("node1"))
        );
        assert_eq!(
            (v["message"].as_str(), v["job_id"].as_u64(), v["error"].as_str()),
            (Some("job ended"), Some(42), Some("exit 3"))
        );
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
    }

    #[test]
    fn text_lines_read_left_to_right() {
        let line = render(LogFormat::Text, 1_795_000_000_123, &Level::INFO, "controller", "controller1", "t", fields());
        assert_eq!(line, "2026-11-18T11:06:40.123Z  INFO controller controller1: job ended job_id=42 error=exit 3\n");
    }

    #[test]
    fn levels_parse_or_say_which_exist() {
        assert_eq!(parse_level("debug"), Ok(Level::DEBUG));
        assert!(parse_level("loud").unwrap_err().contains("error, warn, info"));
    }
}
