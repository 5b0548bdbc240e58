use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

#[test]
fn mix_expands_weights_in_order() {
    let m = parse_mix("get=2,list=1").expect("mix");
    assert_eq!(m.0, [Method::Get, Method::Get, Method::List]);
    assert_eq!(parse_mix("list=1").expect("mix").0, [Method::List]);
}

#[test]
fn bad_flags_are_named() {
    let err = Cli::try_parse_from(["x", "--mix", "get=8,put=2"])
        .err()
        .expect("rejected")
        .to_string();
    assert!(err.contains("--mix") && err.contains("put"), "{err}");
    let err = Cli::try_parse_from(["x", "--mix", "get=x"])
        .err()
        .expect("rejected")
        .to_string();
    assert!(err.contains("--mix"), "{err}");
    let err = Cli::try_parse_from(["x", "--duration", "soon"])
        .err()
        .expect("rejected")
        .to_string();
    assert!(err.contains("--duration"), "{err}");
    let err = Cli::try_parse_from(["x", "-H", "novalue"])
        .err()
        .expect("rejected")
        .to_string();
    assert!(err.contains("--header"), "{err}");
    assert!(Cli::try_parse_from(["x", "--rate", "10", "--concurrency", "2"]).is_err());
}

#[test]
fn defaults() {
    let c = Cli::try_parse_from(["x", "-H", "User-Type: premium"])
        .expect("parses")
        .load;
    assert_eq!(c.gateway.target, "127.0.0.1:8443");
    assert_eq!(c.duration, Duration::from_secs(10));
    assert_eq!((c.rate, c.concurrency, c.connections), (None, None, 1));
    assert_eq!(c.mix.0.len(), 10);
    assert_eq!(c.headers[0].0.as_str(), "user-type");
}
