//! The connection behaviour of a scenario ([`ConnConfig`]): the upgrade request, the
//! messages (on open, rate-driven, on reconnect, heartbeat), the replies expected, timers.
//! A new connection option is a flag in `args.rs`, a line here, and its field in
//! `proto::conn`'s config.

use super::{inv, Shape};
use crate::cli::args::{LatencyUnitArg, RoleArg, RunArgs};
use crate::plan::message::{load_message, templated, Resolver};
use crate::plan::{PlanError, Url};
use crate::proto::conn::{ConnConfig, Fanout, Heartbeat, Message};
use crate::proto::inspect::{ExpectPattern, LatencyField, TimeUnit};
use crate::proto::template::Template;
use crate::proto::ws::frame::OpCode;
use crate::proto::ws::handshake::RequestTemplate;
use std::time::Duration;

use super::auth::Steps;

/// Micros of a duration, for the config's timers.
fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// The connection config, and the message rate per connection (0: no messages).
pub(super) fn config(
    a: &RunArgs,
    url: &Url,
    shape: &Shape,
    auth: &Steps,
) -> Result<(ConnConfig, f64), PlanError> {
    let opcode = if a.binary {
        OpCode::Binary
    } else {
        OpCode::Text
    };
    let resolver = Resolver {
        token: auth.gives_token(),
        scenario: a.scenario.as_deref().unwrap_or("default"),
        base: a.base_dir.as_deref(),
    };
    let (on_open, message, on_reconnect) = messages(a, opcode, &resolver)?;
    let rate = message_rate(a, shape, message.is_some())?;
    let heartbeat = match a.heartbeat_interval {
        None => None,
        Some(iv) => {
            let m = Message::fixed(opcode, a.heartbeat_message.as_bytes().into());
            Some(Heartbeat {
                interval: us(iv),
                message: templated("--heartbeat-message", m, &resolver)?,
                expect: a.heartbeat_expect.clone(),
                timeout: us(a.heartbeat_timeout),
            })
        }
    };
    let expect = match (&a.expect, a.role) {
        (Some(e), _) => Some(e.clone()),
        (None, Some(RoleArg::Subscriber)) if a.send_on_open.is_empty() => {
            Some(ExpectPattern::JsonEq {
                key: "type".into(),
                value: "subscribed".into(),
            })
        }
        _ => None,
    };
    let conn = ConnConfig {
        mode: shape.mode,
        tls: None,
        template: request(a, url, &resolver)?,
        connect_timeout: us(a.connect_timeout),
        on_open,
        message,
        message_count: a.message_count,
        on_reconnect,
        fanout: a.role.map(|r| match r {
            RoleArg::Publisher => Fanout::Publisher,
            RoleArg::Subscriber => Fanout::Subscriber,
        }),
        // Numbered across the run by `Run::new`.
        channel: 0,
        heartbeat,
        message_interval: if rate > 0.0 {
            (1e6 / rate).max(1.0) as u64
        } else {
            0
        },
        ping_interval: a.ping_interval.map_or(0, us),
        pong_timeout: a.pong_timeout.map_or(0, us),
        latency_from: latency_from(a)?,
        expect: expect.map(|p| (p, us(a.expect_timeout))),
        epoch_unix_us: 0,
        session_lifetime: a.session_lifetime.map_or(0, us),
        close_wait: us(a.close_wait),
        validate_utf8: !a.no_utf8_check,
        timer_resolution: us(a.timer_resolution).max(1),
    };
    Ok((conn, rate))
}

/// The upgrade request: the URL's path and the headers take only the expressions fixed
/// before the run (`{{token}}`, `{{env}}`, `{{scenario}}`).
fn request(a: &RunArgs, url: &Url, r: &Resolver<'_>) -> Result<RequestTemplate, PlanError> {
    let fixed = |flag: &'static str, text: &str| -> Result<String, PlanError> {
        match Template::parse(text, r) {
            Ok(None) => Ok(text.to_owned()),
            Ok(Some(t)) if t.is_fixed() => Ok(String::from_utf8_lossy(&t.render_fixed()).into_owned()),
            Ok(Some(_)) => Err(inv(
                flag,
                format!("`{text}`: only {{{{token}}}}, {{{{env NAME}}}} and {{{{scenario}}}} can be used here (the upgrade request is the same for every connection); per-connection values go in messages"),
            )),
            Err(reason) => Err(inv(flag, reason)),
        }
    };
    let headers = a
        .headers
        .iter()
        .map(|(n, v)| Ok((n.clone(), fixed("--header", v)?)))
        .collect::<Result<Vec<_>, PlanError>>()?;
    if headers
        .iter()
        .any(|(_, v)| v.chars().any(|c| c.is_control()))
    {
        return Err(inv(
            "--header",
            "a header value rendered with a control character (check {{env}})",
        ));
    }
    let path = fixed("URL", &url.path)?;
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(inv(
            "URL",
            "the path rendered with whitespace (percent-encode it)",
        ));
    }
    Ok(RequestTemplate::new(
        &url.host_header(),
        &path,
        &headers,
        &a.subprotocols,
    ))
}

/// The messages on open, rate-driven and on reconnect, with the fan-out roles' defaults.
#[allow(clippy::type_complexity)] // reason: three named parts of one answer, destructured at once
fn messages(
    a: &RunArgs,
    opcode: OpCode,
    r: &Resolver<'_>,
) -> Result<(Vec<Message>, Option<Message>, Option<Message>), PlanError> {
    let channel_json =
        || serde_json::to_string(a.channel.as_deref().unwrap_or_default()).unwrap_or_default();
    let needs_channel = match a.role {
        Some(RoleArg::Publisher) => a.message.is_none(),
        Some(RoleArg::Subscriber) => a.send_on_open.is_empty(),
        None => false,
    };
    if needs_channel && a.channel.as_deref().is_none_or(str::is_empty) {
        return Err(inv(
            "--channel",
            "a publisher or subscriber needs a channel (or its own --message / --send-on-open)",
        ));
    }
    let default_open = (a.role == Some(RoleArg::Subscriber) && a.send_on_open.is_empty())
        .then(|| format!(r#"{{"action":"subscribe","channel":{}}}"#, channel_json()));
    let default_message = (a.role == Some(RoleArg::Publisher) && a.message.is_none()).then(|| {
        format!(
            r#"{{"action":"publish","channel":{},"pub":{{{{conn_id}}}},"seq":{{{{seq}}}},"ts":{{{{now_us}}}}}}"#,
            channel_json()
        )
    });
    let on_open = a
        .send_on_open
        .iter()
        .cloned()
        .chain(default_open)
        .map(|s| load_message("--send-on-open", &s, opcode))
        .collect::<Result<Vec<_>, _>>()?;
    let message = a
        .message
        .clone()
        .or(default_message)
        .as_deref()
        .map(|s| load_message("--message", s, opcode))
        .transpose()?;
    let on_reconnect = a
        .on_reconnect
        .as_deref()
        .map(|s| load_message("--on-reconnect", s, opcode))
        .transpose()?;
    let on_open = on_open
        .into_iter()
        .map(|m| templated("--send-on-open", m, r))
        .collect::<Result<Vec<_>, _>>()?;
    let message = message.map(|m| templated("--message", m, r)).transpose()?;
    let on_reconnect = on_reconnect
        .map(|m| templated("--on-reconnect", m, r))
        .transpose()?;
    Ok((on_open, message, on_reconnect))
}

/// Messages per second per connection: `--message-rate`, or `--message-total-rate` shared
/// by the connections alive at once. 0 without a message.
fn message_rate(a: &RunArgs, shape: &Shape, has_message: bool) -> Result<f64, PlanError> {
    // A total rate is the per-connection rate times the connections alive at once.
    let alive = match (shape.arrival_rate, a.session_lifetime) {
        (Some(r), Some(life)) => (r * life.as_secs_f64()).max(1.0),
        _ => shape.connections as f64,
    };
    let rate = match a.message_total_rate {
        Some(_) if !has_message => {
            return Err(inv(
                "--message-total-rate",
                "needs --message (or --role publisher)",
            ))
        }
        Some(t) if !(t.is_finite() && t > 0.0) => {
            return Err(inv(
                "--message-total-rate",
                format!("must be a positive number of messages per second, got {t}"),
            ))
        }
        Some(t) => t / alive,
        None => a.message_rate,
    };
    if !has_message {
        return Ok(0.0);
    }
    if !(rate.is_finite() && rate > 0.0) {
        return Err(inv(
            "--message-rate",
            format!("must be a positive rate per connection, got {rate}"),
        ));
    }
    if rate < 0.001 {
        return Err(inv(
            "--message-rate",
            "must be at least 0.001 per second (one message per 1000 s)",
        ));
    }
    if rate > 100_000.0 {
        return Err(inv(
            "--message-rate",
            "is per connection; above 100000/s use more connections",
        ));
    }
    Ok(rate)
}

/// `--latency-from json:FIELD` with its unit.
fn latency_from(a: &RunArgs) -> Result<Option<LatencyField>, PlanError> {
    let Some(spec) = a.latency_from.as_deref() else {
        return Ok(None);
    };
    let field = spec.strip_prefix("json:").filter(|f| {
        !f.is_empty() && !f.contains(['"', '\\']) && f.chars().all(|c| !c.is_control())
    });
    let Some(field) = field else {
        return Err(inv(
            "--latency-from",
            format!("`{spec}`: expected json:FIELD, e.g. json:server_ts"),
        ));
    };
    let unit = match a.latency_unit {
        LatencyUnitArg::Ms => TimeUnit::Millis,
        LatencyUnitArg::Us => TimeUnit::Micros,
        LatencyUnitArg::Ns => TimeUnit::Nanos,
    };
    Ok(Some(LatencyField::new(field, unit)))
}
