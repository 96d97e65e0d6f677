//! The upgrade request a connection sends: the URL's path (Socket.IO's default path), the
//! `--header` values, the subprotocols a protocol needs and the permessage-deflate offer.

use super::{ConnArgs, ProtocolArg};
use crate::plan::message::Resolver;
use crate::plan::{PlanError, Url};
use crate::proto::app::graphql;
use crate::proto::template::Template;
use crate::proto::ws::handshake::RequestTemplate;

/// The upgrade request: the URL's path and the header values may hold any template
/// expression; what is fixed (`{{env}}`, `{{scenario}}`, a pre-step's `{{token}}`) is rendered
/// now, the rest (`{{conn_id}}`, `{{line FILE}}`, a connection's own `{{token}}`, ...) per
/// connection.
pub(super) fn request(
    a: &ConnArgs,
    url: &Url,
    r: &Resolver<'_>,
) -> Result<RequestTemplate, PlanError> {
    let parse = |flag: &'static str, text: &str| -> Result<Template, PlanError> {
        Template::parse(text, r)
            .map(|t| t.unwrap_or_else(|| Template::literal(text)))
            .map_err(|reason| PlanError::invalid(flag, reason))
    };
    let control = |b: &[u8]| b.iter().any(|c| c.is_ascii_control());
    let mut headers = Vec::with_capacity(a.headers.len());
    for (n, v) in &a.headers {
        let t = parse("--header", v)?;
        if t.any_text(control) {
            return Err(PlanError::invalid(
                "--header",
                format!("`{n}`: the value renders with a control character (check {{{{env}}}} and {{{{line}}}} files)"),
            ));
        }
        headers.push((n.clone(), t));
    }
    let path_text = match a.protocol {
        ProtocolArg::Socketio => socketio_path(&url.path),
        _ => url.path.clone(),
    };
    let path = parse("URL", &path_text)?;
    if path.any_text(|b| {
        b.iter()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    }) {
        return Err(PlanError::invalid(
            "URL",
            "the path renders with whitespace (percent-encode it, also in {{env}} values and {{line}} files)",
        ));
    }
    let mut subprotocols = a.subprotocols.clone();
    match a.protocol {
        ProtocolArg::GraphqlWs if !subprotocols.iter().any(|p| p == graphql::SUBPROTOCOL) => {
            subprotocols.insert(0, graphql::SUBPROTOCOL.to_string());
        }
        ProtocolArg::Stomp if subprotocols.is_empty() => {
            // What STOMP clients (stomp.js) offer; brokers accept the session without too.
            subprotocols.extend([
                "v12.stomp".to_string(),
                "v11.stomp".to_string(),
                "v10.stomp".to_string(),
            ]);
        }
        _ => {}
    }
    let t = RequestTemplate::templated(&url.host_header(), &path, &headers, &subprotocols);
    Ok(match a.compression {
        Some(offer) => t.with_deflate(offer),
        None => t,
    })
}

/// A Socket.IO endpoint's path: `/socket.io/` when the URL gives none, with
/// `EIO=4&transport=websocket` added to its query unless it says `EIO=` already.
fn socketio_path(path: &str) -> String {
    let mut p = if path == "/" || path.starts_with("/?") {
        format!("/socket.io/{}", &path[1..])
    } else {
        path.to_string()
    };
    if !p.contains("EIO=") {
        p.push(if p.contains('?') { '&' } else { '?' });
        p.push_str("EIO=4&transport=websocket");
    }
    p
}
