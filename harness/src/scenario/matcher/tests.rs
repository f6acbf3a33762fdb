//! Unit tests of `scenario::matcher`.

#[test]
fn every_code_but_ok_is_a_name_scenarios_can_write() {
    for c in crate::wire::Code::ALL.into_iter().skip(1) {
        let e: ErrorCode = serde_yaml_ng::from_str(c.as_str()).unwrap();
        assert_eq!(e.code(), Some(c));
        assert_eq!(e.as_str(), c.as_str());
    }
    let any: ErrorCode = serde_yaml_ng::from_str("any").unwrap();
    assert_eq!((any.code(), any.as_str()), (None, "any"));
    assert!(serde_yaml_ng::from_str::<ErrorCode>("ok").is_err());
}
use super::*;
use serde_json::json;

fn vars(n: &str) -> Option<String> {
    (n == "init-pid").then(|| "42".to_string())
}

#[test]
fn scalars_and_words() {
    let m = |y: &str| serde_yaml_ng::from_str::<Matcher>(y).unwrap();
    assert!(m("143").check(Some(&json!(143)), &vars).is_ok());
    assert!(m("143")
        .check(Some(&json!(0)), &vars)
        .unwrap_err()
        .contains("expected 143, got 0"));
    assert!(m("nonzero").check(Some(&json!(7)), &vars).is_ok());
    assert!(m("nonzero").check(Some(&json!(0)), &vars).is_err());
    assert!(m("nonzero").check(None, &vars).is_err());
    assert!(m("running").check(Some(&json!("running")), &vars).is_ok());
    assert!(m("${init-pid}").check(Some(&json!(42)), &vars).is_ok());
    assert!(m("${nope}")
        .check(Some(&json!(42)), &vars)
        .unwrap_err()
        .contains("nope"));
    assert!(m("{gt: 3, lt: 5}").check(Some(&json!(4)), &vars).is_ok());
    assert!(m("{one-of: [1, 2]}").check(Some(&json!(3)), &vars).is_err());
    assert!(m("{contains: '${init-pid}'}")
        .check(Some(&json!([1, 42])), &vars)
        .is_ok());
    assert!(m("{len: 0}").check(Some(&json!([])), &vars).is_ok());
    assert!(m("{not-before: '2020-01-01T00:00:00Z'}")
        .check(Some(&json!("2021-01-01T00:00:00Z")), &vars)
        .is_ok());
    assert!(m("{not-before: '2022-01-01T00:00:00Z'}")
        .check(Some(&json!("2021-01-01T00:00:00Z")), &vars)
        .is_err());
}

#[test]
fn bad_operator_is_an_error() {
    // A typo next to a real operator is refused at load time, naming both.
    let e = serde_yaml_ng::from_str::<Matcher>("{gt: 1, lesser: 3}").unwrap_err();
    assert!(e.to_string().contains("`lesser`"), "{e}");
    assert!(e.to_string().contains("`gt`"), "{e}");
    // Alone it is a literal map, and the mismatch says how it was read.
    let e = serde_yaml_ng::from_str::<Matcher>("{greater: 3}")
        .unwrap()
        .check(Some(&json!(5)), &vars)
        .unwrap_err();
    assert!(
        e.contains(
            r#"expected the map {"greater":3} (a literal: none of its keys is an operator), got 5"#
        ),
        "{e}"
    );
    // Operators are still checked for their values.
    assert!(serde_yaml_ng::from_str::<Matcher>("{len: many}").is_err());
    assert!(serde_yaml_ng::from_str::<Matcher>("{matches: '('}").is_err());
}

#[test]
fn literal_lists() {
    let m = |y: &str| serde_yaml_ng::from_str::<Matcher>(y).unwrap();
    // `processes: []`: only an empty list matches.
    assert!(matches!(m("[]"), Matcher::Literal(_)));
    assert!(m("[]").check(Some(&json!([])), &vars).is_ok());
    assert_eq!(
        m("[]").check(Some(&json!([42])), &vars).unwrap_err(),
        "expected [], got [42]"
    );
    assert!(m("[]").check(None, &vars).is_err());
    assert!(m("[]").check(Some(&json!({})), &vars).is_err());
    // Numbers: the same elements in the same order, loosely (numbers vs strings).
    assert!(m("[1, 2, 3]").check(Some(&json!([1, 2, 3])), &vars).is_ok());
    assert!(m("[1, 2, 3]")
        .check(Some(&json!(["1", 2.0, "3"])), &vars)
        .is_ok());
    assert!(m("['1', '2']").check(Some(&json!([1, 2])), &vars).is_ok());
    assert_eq!(
        m("[1, 2, 3]")
            .check(Some(&json!([1, 3, 2])), &vars)
            .unwrap_err(),
        "expected [1,2,3], got [1,3,2]"
    );
    assert!(m("[1, 2, 3]").check(Some(&json!([1, 2])), &vars).is_err());
    assert!(m("[1, 2]").check(Some(&json!([1, 2, 3])), &vars).is_err());
    assert!(m("[1, 2]").check(Some(&json!("1, 2")), &vars).is_err());
    // Variables are expanded; the words are plain text inside a literal.
    assert!(m("['${init-pid}']")
        .check(Some(&json!([42])), &vars)
        .is_ok());
    assert!(m("['${nope}']")
        .check(Some(&json!([42])), &vars)
        .unwrap_err()
        .contains("nope"));
    assert!(m("[any]").check(Some(&json!([7])), &vars).is_err());
    assert!(m("[Running]")
        .check(Some(&json!(["running"])), &vars)
        .is_ok());
    // A list of maps.
    assert!(m("[{pid: 42, info: null}]")
        .check(Some(&json!([{"pid": 42, "info": null}])), &vars)
        .is_ok());
}

#[test]
fn literal_maps() {
    let m = |y: &str| serde_yaml_ng::from_str::<Matcher>(y).unwrap();
    let io = json!({"stdin": "", "stdout": "/x/out", "terminal": false});
    let lit = m("{stdin: '', stdout: /x/out, terminal: false}");
    assert!(matches!(lit, Matcher::Literal(_)));
    assert!(lit.check(Some(&io), &vars).is_ok());
    // Key order does not matter; values compare loosely.
    assert!(m("{pid: '42', count: 1}")
        .check(Some(&json!({"count": 1, "pid": 42})), &vars)
        .is_ok());
    assert!(m("{pid: '${init-pid}'}")
        .check(Some(&json!({"pid": 42})), &vars)
        .is_ok());
    // A different value, a missing key, an extra key: mismatches.
    assert_eq!(
        m("{pid: 42}")
            .check(Some(&json!({"pid": 43})), &vars)
            .unwrap_err(),
        r#"expected {"pid":42}, got {"pid":43}"#
    );
    assert!(m("{pid: 42, x: 1}")
        .check(Some(&json!({"pid": 42})), &vars)
        .is_err());
    assert!(m("{pid: 42}")
        .check(Some(&json!({"pid": 42, "x": 1})), &vars)
        .is_err());
    assert!(m("{pid: 42}").check(None, &vars).is_err());
    // Nested.
    assert!(m("{a: {b: [1, '2']}}")
        .check(Some(&json!({"a": {"b": [1, 2]}})), &vars)
        .is_ok());
    assert!(m("{a: {b: [1, 2]}}")
        .check(Some(&json!({"a": {"b": [1]}})), &vars)
        .is_err());
    // `{}` keeps its old meaning (no operator: anything); the empty map is `equals: {}`.
    assert!(matches!(m("{}"), Matcher::Ops(_)));
    assert!(m("{}").check(Some(&json!(5)), &vars).is_ok());
    assert!(m("{equals: {}}").check(Some(&json!({})), &vars).is_ok());
    assert!(m("{equals: {}}")
        .check(Some(&json!({"a": 1})), &vars)
        .is_err());
    // `equals` with a map compares loosely too.
    assert!(m("{equals: {pid: '42'}}")
        .check(Some(&json!({"pid": 42})), &vars)
        .is_ok());
}

#[test]
fn expect_error_forms() {
    let e: ExpectError = serde_yaml_ng::from_str("not-found").unwrap();
    assert!(e.accepts("not-found") && !e.accepts("unknown"));
    let e: ExpectError = serde_yaml_ng::from_str("[unknown, failed-precondition]").unwrap();
    assert!(e.accepts("unknown") && e.accepts("failed-precondition"));
    let e: ExpectError = serde_yaml_ng::from_str("any").unwrap();
    assert!(e.accepts("internal"));
    assert!(serde_yaml_ng::from_str::<ExpectError>("nope").is_err());
}

#[test]
fn output_match() {
    let m: OutputMatch = serde_yaml_ng::from_str("{equals: \"hi\\n\", length: 3}").unwrap();
    assert!(m.check(b"hi\n", &vars).is_ok());
    assert!(m.check(b"ho\n", &vars).is_err());
    assert!(serde_yaml_ng::from_str::<OutputMatch>("{matches: '('}").is_err());
}

fn event_matches(y: &str) -> Vec<EventMatch> {
    serde_yaml_ng::from_str(y).unwrap()
}

fn delivered(topics: &[&str]) -> Vec<(String, Value)> {
    topics
        .iter()
        .map(|t| (t.to_string(), json!({"exit-status": 0})))
        .collect()
}

const NO_VARS: &dyn Fn(&str) -> Option<String> = &|_| None;

#[test]
fn subsequence_and_exact() {
    let want = event_matches("[/tasks/create, /tasks/start, /tasks/exit]");
    let seq = delivered(&[
        "/tasks/create",
        "/tasks/oom",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ]);
    assert_eq!(match_events(&seq, &want, false, NO_VARS), Ok(4));
    assert!(match_events(&seq, &want, true, NO_VARS)
        .unwrap_err()
        .contains("5 events instead of 3"));
    let early = delivered(&["/tasks/create", "/tasks/exit", "/tasks/start"]);
    let e = match_events(&early, &want, false, NO_VARS).unwrap_err();
    assert_eq!(e, "no /tasks/exit after /tasks/start");
    let e = match_events(&early, &want, true, NO_VARS).unwrap_err();
    assert_eq!(e, "event 2 is /tasks/exit, expected /tasks/start");
}

#[test]
fn fields_are_checked() {
    let want = event_matches("[{topic: /tasks/exit, fields: {exit-status: 143}}]");
    let e = match_events(&delivered(&["/tasks/exit"]), &want, false, NO_VARS).unwrap_err();
    assert_eq!(e, "/tasks/exit came with exit-status: expected 143, got 0");
    assert!(match_events(&delivered(&[]), &want, false, NO_VARS)
        .unwrap_err()
        .contains("no /tasks/exit"));
}
