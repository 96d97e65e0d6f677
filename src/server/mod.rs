//! Built-in target gateway (tungstenite + mio): echo, fan-out publisher, subscribe acks.
