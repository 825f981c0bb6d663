//! Property tests for the encoders: every value is either refused with the placement's error, or
//! arrives at the upstream decoding back to exactly itself, once (the properties are the fuzz
//! targets' own, `authsidecar::fuzzing`, here driven by proptest's generators).

use authsidecar::fuzzing;
use proptest::prelude::*;

/// Strings rich in what breaks encoders: separators, escapes, dot segments, controls, non-ASCII.
fn tricky() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9/\\\\.%&=+#?; ~_\\-]{0,24}",
        "(%[0-9a-fA-F]{2}|[./]|\\.\\.|%2[eEfF]){0,8}",
        "[\\x00-\\x1f\\x7f a\u{85}\u{2028}é€😀{}$]{0,16}",
    ]
}

fn joined(a: &str, b: &str) -> Vec<u8> {
    let mut v = a.as_bytes().to_vec();
    v.push(0xff);
    v.extend_from_slice(b.as_bytes());
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn header_values_are_refused_or_arrive_as_one_identical_header(v in tricky()) {
        fuzzing::header(v.as_bytes());
    }

    #[test]
    fn query_values_decode_back_and_the_callers_query_is_kept(q in tricky(), v in tricky()) {
        fuzzing::query(&joined(&q, &v));
    }

    #[test]
    fn path_values_stay_in_one_segment_and_decode_back(v in tricky()) {
        fuzzing::path_param(v.as_bytes());
    }

    #[test]
    fn json_payload_values_decode_back(v in tricky(), n in any::<i64>(), key in "[a-z]{1,6}") {
        let body = format!("{{\"{key}\":{n},\"auth\":{{\"keep\":true}}}}");
        fuzzing::json_payload(&joined(&body, &v));
    }

    #[test]
    fn form_payload_values_decode_back(body in tricky(), v in tricky()) {
        fuzzing::form_payload(&joined(&body, &v));
    }

    #[test]
    fn tenants_are_one_dns_label_and_context_values_stay_literal(v in tricky()) {
        fuzzing::tenant_context(v.as_bytes());
    }

    #[test]
    fn templates_render_in_one_pass(t in "([a-z ]|\\{\\{(access_token|user|tenant|context\\.x)\\}\\}|\\{|\\}){0,12}", v in tricky()) {
        fuzzing::template(&joined(&t, &v));
    }
}
