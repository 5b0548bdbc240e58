use super::*;
use crate::trace::span::{Kind, Process, Tags, Value};

fn span(trace: u8, id: u8, parent: Option<u8>, service: &Arc<Process>, start: u64, dur: u64) -> Span {
    Span {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([id; 8]),
        parent: parent.map(|p| SpanId([p; 8])),
        name: format!("op-{id}"),
        kind: Kind::Server,
        start_unix_nanos: start,
        duration_nanos: dur,
        tags: Tags::Owned(vec![("http.status_code".into(), Value::from("200"))]),
        events: Vec::new(),
        error: false,
        status_message: None,
        process: service.clone(),
    }
}

fn process(name: &str) -> Arc<Process> {
    Arc::new(Process {
        service: name.into(),
        tags: Vec::new(),
        span_tags: Vec::new(),
    })
}

#[test]
fn the_oldest_trace_goes_first_when_the_count_is_reached() {
    let p = process("a");
    let store = Store::new(Limits {
        max_traces: 2,
        max_bytes: usize::MAX,
    });
    for t in 1..=3u8 {
        store.insert([span(t, 1, None, &p, u64::from(t) * 1000, 10)]);
    }
    let s = store.stats();
    assert_eq!((s.traces, s.spans, s.evicted_traces), (2, 2, 1));
    assert!(store.get(TraceId([1; 16])).is_none());
    assert!(store.get(TraceId([3; 16])).is_some());
}

#[test]
fn the_byte_budget_holds() {
    let p = process("a");
    let one = {
        let store = Store::new(Limits::default());
        store.insert([span(1, 1, None, &p, 0, 1)]);
        store.stats().bytes
    };
    let store = Store::new(Limits {
        max_traces: 1000,
        max_bytes: one * 10,
    });
    for t in 0..100u8 {
        store.insert([span(t, 1, None, &p, 0, 1)]);
    }
    let s = store.stats();
    assert!(s.bytes <= one * 10, "{s:?}");
    assert_eq!(s.traces, 10);
    assert_eq!(s.received_spans, 100);
}

#[test]
fn search_matches_one_span_by_service_operation_tags_and_duration() {
    let (gw, app) = (process("gw"), process("app"));
    let store = Store::new(Limits::default());
    let mut slow = span(1, 2, Some(1), &app, 1_000, 5_000_000);
    if let Tags::Owned(t) = &mut slow.tags {
        t.push(("guid:x-request-id".into(), Value::from("r-1")));
    }
    store.insert([span(1, 1, None, &gw, 0, 6_000_000), slow]);
    store.insert([span(2, 1, None, &gw, 10, 1_000), span(2, 2, Some(1), &app, 20, 500)]);

    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = Query::default();
        f(&mut q);
        store.find(&q).iter().map(|t| t.id.0[0]).collect::<Vec<_>>()
    };
    assert_eq!(q(&|_| {}), [2, 1], "newest first");
    assert_eq!(q(&|q| q.service = Some("app".into())), [2, 1]);
    assert_eq!(q(&|q| q.min_duration = Some(Duration::from_millis(2))), [1]);
    assert_eq!(
        q(&|q| {
            q.service = Some("app".into());
            q.tags.insert("guid:x-request-id".into(), "r-1".into());
        }),
        [1]
    );
    assert_eq!(q(&|q| q.operation = Some("op-9".into())), Vec::<u8>::new());
    assert_eq!(q(&|q| q.limit = 1), [2]);
    assert_eq!(q(&|q| q.errors_only = true), Vec::<u8>::new());

    let t = store.get(TraceId([1; 16])).unwrap().summary();
    assert_eq!((t.root_service.as_str(), t.spans, t.orphans), ("gw", 2, 0));
    assert_eq!(store.services(), ["app", "gw"]);
}

#[test]
fn a_span_whose_parent_is_missing_is_an_orphan() {
    let p = process("a");
    let store = Store::new(Limits::default());
    store.insert([span(1, 1, None, &p, 0, 10), span(1, 2, Some(9), &p, 1, 5)]);
    assert_eq!(store.get(TraceId([1; 16])).unwrap().summary().orphans, 1);
}
