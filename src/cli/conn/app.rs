//! `--protocol` and the flags under its heading: the application protocol a connection speaks
//! over WebSocket (Socket.IO, STOMP, GraphQL subscriptions) and its settings.

use super::{ConnArgs, ProtocolArg, RoleArg};
use crate::plan::message::Resolver;
use crate::plan::PlanError;
use crate::proto::app::{graphql, socketio, stomp};
use crate::proto::conn::{App, Message};
use crate::proto::template::Template;
use crate::proto::ws::frame::OpCode;

/// The application protocol and its settings (`--protocol` and the flags of its heading).
pub(super) fn app(a: &ConnArgs, r: &Resolver<'_>) -> Result<App, PlanError> {
    let only = |flag: &'static str, set: bool, which: &str| -> Result<(), PlanError> {
        if set {
            return Err(PlanError::invalid(
                flag,
                format!("applies to --protocol {which} only"),
            ));
        }
        Ok(())
    };
    let p = a.protocol;
    let stomp_flags = a.destination.is_some()
        || !a.subscribe.is_empty()
        || a.stomp_login.is_some()
        || a.stomp_host != "/"
        || a.stomp_heart_beat != "10000,10000";
    only(
        "--namespace",
        a.namespace != "/" && p != ProtocolArg::Socketio,
        "socketio",
    )?;
    only(
        "--destination/--subscribe/--stomp-*",
        stomp_flags && p != ProtocolArg::Stomp,
        "stomp",
    )?;
    only(
        "--ack",
        a.ack && !matches!(p, ProtocolArg::Socketio | ProtocolArg::Stomp),
        "socketio or stomp",
    )?;
    only(
        "--init-payload",
        a.init_payload.is_some() && !matches!(p, ProtocolArg::Socketio | ProtocolArg::GraphqlWs),
        "socketio or graphql-ws",
    )?;
    if a.heartbeat_interval.is_some() && matches!(p, ProtocolArg::Socketio | ProtocolArg::Stomp) {
        return Err(PlanError::invalid(
            "--heartbeat-interval",
            "Socket.IO and STOMP have heartbeats of their own, answered and checked by --protocol (Engine.IO pings, --stomp-heart-beat)",
        ));
    }
    let init = match &a.init_payload {
        None => None,
        Some(t) => {
            let t = fixed_text("--init-payload", t, r)?;
            let object = serde_json::from_str::<serde_json::Value>(&t).is_ok_and(|v| v.is_object());
            if !object {
                // Not shown: it may hold a token from the environment.
                return Err(PlanError::invalid(
                    "--init-payload",
                    "is not a JSON object (e.g. {\"token\": \"{{env TOKEN}}\"})",
                ));
            }
            Some(t)
        }
    };
    Ok(match p {
        ProtocolArg::Raw => App::Raw,
        ProtocolArg::Socketio => App::SocketIo {
            namespace: socketio::namespace(&a.namespace)
                .map_err(|e| PlanError::invalid("--namespace", e))?,
            auth: init,
            ack: a.ack,
        },
        ProtocolArg::GraphqlWs => App::GraphqlWs { init },
        ProtocolArg::Stomp => {
            let dest = |flag: &'static str, d: &str| {
                stomp::destination(d).map_err(|e| PlanError::invalid(flag, e))
            };
            let destination = match (&a.destination, &a.channel) {
                (Some(d), _) => Some(dest("--destination", d)?),
                (None, Some(c)) if a.role == Some(RoleArg::Publisher) => {
                    Some(dest("--channel", c)?)
                }
                _ => None,
            };
            let mut subscribe = a
                .subscribe
                .iter()
                .map(|d| dest("--subscribe", d))
                .collect::<Result<Vec<_>, _>>()?;
            if let (true, Some(RoleArg::Subscriber), Some(c)) =
                (subscribe.is_empty(), a.role, &a.channel)
            {
                subscribe.push(dest("--channel", c)?);
            }
            let heart_beat = stomp::heart_beat(a.stomp_heart_beat.as_bytes()).ok_or_else(|| {
                PlanError::invalid(
                    "--stomp-heart-beat",
                    format!(
                        "`{}`: expected CX,CY in milliseconds, e.g. 10000,10000 (0,0: none)",
                        a.stomp_heart_beat
                    ),
                )
            })?;
            let login = match &a.stomp_login {
                None => None,
                Some(l) => {
                    let l = fixed_text("--stomp-login", l, r)?;
                    let Some((u, pw)) = l.split_once(':') else {
                        return Err(PlanError::invalid(
                            "--stomp-login",
                            "expected USER:PASSCODE",
                        ));
                    };
                    if l.contains(['\n', '\r', '\0']) {
                        return Err(PlanError::invalid(
                            "--stomp-login",
                            "must not contain line breaks or NUL",
                        ));
                    }
                    Some((u.to_string(), pw.to_string()))
                }
            };
            if a.stomp_host.is_empty() || a.stomp_host.contains(['\n', '\r', '\0']) {
                return Err(PlanError::invalid(
                    "--stomp-host",
                    "must be a virtual host name, e.g. /",
                ));
            }
            App::Stomp {
                client: stomp::Client {
                    host: a.stomp_host.clone(),
                    login,
                    heart_beat,
                },
                destination,
                subscribe,
                receipts: a.ack,
            }
        }
    })
}

/// `text` with its `{{env NAME}}` (and other fixed) expressions rendered; per-connection
/// ones are refused.
fn fixed_text(flag: &'static str, text: &str, r: &Resolver<'_>) -> Result<String, PlanError> {
    match Template::parse(text, r) {
        Ok(None) => Ok(text.to_string()),
        Ok(Some(t)) if t.is_fixed() => Ok(String::from_utf8_lossy(&t.render_fixed()).into_owned()),
        Ok(Some(_)) => Err(PlanError::invalid(
            flag,
            "only fixed expressions ({{env NAME}}, {{scenario}}) are allowed here",
        )),
        Err(reason) => Err(PlanError::invalid(flag, reason)),
    }
}

/// A message as loaded (its `{{...}}` expressions not yet parsed) is what the protocol
/// sends: a Socket.IO emit, a GraphQL operation.
pub(super) fn check_app_message(
    protocol: ProtocolArg,
    flag: &'static str,
    m: &Message,
) -> Result<(), PlanError> {
    let text = &m.payload[..];
    let templated = text.windows(2).any(|w| w == b"{{");
    match protocol {
        ProtocolArg::Socketio => {
            let head: Vec<u8> = text
                .iter()
                .copied()
                .filter(|c| !c.is_ascii_whitespace())
                .take(2)
                .collect();
            let emit = if templated {
                head == b"[\""
            } else {
                serde_json::from_slice::<serde_json::Value>(text).is_ok() && socketio::is_emit(text)
            };
            if m.opcode != OpCode::Text || !emit {
                return Err(PlanError::invalid(flag, format!(
                    "with --protocol socketio a message is an emit's arguments as a JSON array, the event name first: [\"chat message\", {{\"text\": \"hi\"}}], not `{}`",
                    String::from_utf8_lossy(&text[..text.len().min(60)])
                )));
            }
        }
        ProtocolArg::GraphqlWs if !templated => {
            graphql::operation(text).map_err(|e| PlanError::invalid(flag, e))?
        }
        ProtocolArg::Stomp if m.opcode != OpCode::Text => {
            return Err(PlanError::invalid(
                "--binary",
                "STOMP frames are text: bodies go in SEND frames",
            ))
        }
        _ => {}
    }
    Ok(())
}
