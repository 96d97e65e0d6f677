//! Application protocols between the frame codec and a scenario's messages: Socket.IO v4
//! (over Engine.IO v4), STOMP 1.2 and GraphQL over WebSocket (`graphql-transport-ws`).
//! Each is a parser of whole received messages and encoders of the messages a client sends,
//! sans-IO like the codec under them; `proto::conn` runs their handshakes, heartbeats and
//! acknowledgements, and hands the scenario only the payloads (an event's arguments, a
//! MESSAGE's body, a `next`'s result).

pub mod graphql;
pub mod json;
pub mod socketio;
pub mod stomp;

/// Which application protocol a scenario speaks over its WebSocket sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Messages are the scenario's own bytes.
    #[default]
    Raw,
    /// Socket.IO v4 over Engine.IO v4 (WebSocket transport).
    SocketIo,
    /// STOMP 1.2.
    Stomp,
    /// GraphQL over WebSocket (`graphql-transport-ws`).
    GraphqlWs,
}

impl Protocol {
    /// Its name in flags, files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::SocketIo => "socketio",
            Self::Stomp => "stomp",
            Self::GraphqlWs => "graphql-ws",
        }
    }
}
