//! `{{last_seq}}` from a field of any name (`--last-seq-field`).

use super::*;
use crate::proto::inspect::{LatencyField, TimeUnit};

#[test]
fn replacement_resumes_from_the_configured_sequence_field() {
    let mut h = Harness::new(ConnConfig {
        message: None,
        on_reconnect: Some(templated(
            r#"{"action":"resume_session","lastSequence":{{last_seq}}}"#,
        )),
        last_seq_field: LatencyField::new("sequence", TimeUnit::Micros),
        ..cfg()
    });
    let mut first = h.open(0);
    // `seq` is some other number here; the stream's position is `sequence`.
    for (seq, sequence) in [(1, 41), (2, 44), (3, 43)] {
        let m = format!(r#"{{"type":"quote","seq":{seq},"sequence":{sequence}}}"#);
        first.handle_recv(&mut h.ctx(), 10 * MS, &server_frame(0x81, m.as_bytes()));
    }
    assert_eq!(first.last_seq(), 44);
    let mut c = Conn::new(&mut h.ctx(), 20 * MS);
    c.resume_from(first.last_seq());
    c.handle_connected(&mut h.ctx(), 21 * MS);
    let req = h.tx(&mut c, 21 * MS);
    c.handle_recv(&mut h.ctx(), 22 * MS, &response_for(&req));
    let frames = client_frames(&h.tx(&mut c, 22 * MS));
    assert_eq!(
        frames
            .last()
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned()),
        Some(r#"{"action":"resume_session","lastSequence":44}"#.to_owned())
    );
}
