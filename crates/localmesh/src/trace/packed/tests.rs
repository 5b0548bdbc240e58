use super::*;
use crate::trace::span::Value;

#[test]
fn a_span_reads_back_as_it_was_packed() {
    let process = Arc::new(Process {
        service: "product.default".into(),
        tags: Vec::new(),
        span_tags: vec![("istio.namespace".into(), Value::from("default"))],
    });
    let span = Span {
        trace_id: TraceId([7; 16]),
        span_id: SpanId([1; 8]),
        parent: Some(SpanId([2; 8])),
        name: "GetProduct".into(),
        kind: Kind::Server,
        start_unix_nanos: 1_700_000_000_000_000_000,
        duration_nanos: 1234,
        tags: Tags::Owned(vec![
            ("http.status_code".into(), Value::from("200")),
            ("retry".into(), Value::Bool(true)),
            ("attempt".into(), Value::Int(-3)),
            ("weight".into(), Value::Float(0.8)),
            ("ünï".into(), Value::from("cödé")),
        ]),
        events: vec![Event {
            time_unix_nanos: 5,
            name: "exception".into(),
            tags: vec![("exception.message".into(), Value::from("boom"))],
        }],
        error: true,
        status_message: Some("deadline".into()),
        process: process.clone(),
    };
    let plain = Span {
        span_id: SpanId([3; 8]),
        parent: None,
        tags: Tags::default(),
        events: Vec::new(),
        error: false,
        status_message: None,
        kind: Kind::Unspecified,
        ..span.clone()
    };
    let mut buf = Vec::new();
    for s in [&span, &plain] {
        encode_varint(0, &mut buf);
        pack(s, &mut buf);
    }
    let processes = [process];
    let back: Vec<Span> = spans(&buf, &processes).map(|v| v.to_span(span.trace_id)).collect();
    assert_eq!(back.len(), 2);
    for (a, b) in back.iter().zip([&span, &plain]) {
        assert_eq!(format!("{:?}", a.all_tags()), format!("{:?}", b.all_tags()));
        assert_eq!(
            (
                a.span_id,
                a.parent,
                a.kind,
                a.error,
                &a.name,
                &a.status_message,
                &a.events
            ),
            (
                b.span_id,
                b.parent,
                b.kind,
                b.error,
                &b.name,
                &b.status_message,
                &b.events
            )
        );
        assert_eq!(
            (a.start_unix_nanos, a.duration_nanos),
            (b.start_unix_nanos, b.duration_nanos)
        );
    }
    let v = spans(&buf, &processes).next().unwrap();
    assert!(v.is_error());
    assert_eq!(
        v.tag("istio.namespace").map(|v| v.as_text().into_owned()).as_deref(),
        Some("default")
    );
}

#[test]
fn every_key_code_names_its_key() {
    for (i, k) in KEYS.iter().enumerate() {
        assert_eq!(key_code(k), Some(i as u8), "{k}");
    }
    assert_eq!(key_code("http.url.x"), None);
    let mut out = Vec::new();
    put_tag(&mut out, "http.url", ValueRef::Str("u"));
    assert_eq!(out.len(), 4, "a known key packs as one byte");
}

#[test]
fn a_cut_buffer_ends_the_reading_without_a_panic() {
    let process = Arc::new(Process {
        service: "a".into(),
        tags: Vec::new(),
        span_tags: Vec::new(),
    });
    let span = Span {
        trace_id: TraceId([7; 16]),
        span_id: SpanId([1; 8]),
        parent: None,
        name: "op".into(),
        kind: Kind::Server,
        start_unix_nanos: 1,
        duration_nanos: 2,
        tags: Tags::Owned(vec![("k".into(), Value::from("v"))]),
        events: Vec::new(),
        error: false,
        status_message: None,
        process: process.clone(),
    };
    let mut buf = Vec::new();
    encode_varint(0, &mut buf);
    pack(&span, &mut buf);
    let processes = [process];
    for cut in 0..buf.len() {
        assert_eq!(spans(&buf[..cut], &processes).count(), 0, "cut at {cut}");
    }
    // An index past the processes is not a span either.
    buf[0] = 5;
    assert_eq!(spans(&buf, &processes).count(), 0);
}
