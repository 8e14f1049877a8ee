//! The refusal tables of proto-spec.md (§9.1, §14.7): `| `case` | failure
//! | answer |` rows, read from the spec itself so that the probes and the
//! text cannot drift apart.

use std::collections::BTreeMap;

/// The cases of the first table after the heading that starts with
/// `heading` (such as `"### 9.1 "`), up to the next section: case name →
/// answer (an alert name, `ACK_ <status>`, or `none`).
pub fn case_table(heading: &str) -> BTreeMap<String, String> {
    let spec = include_str!("../../proto-spec.md");
    let start = spec
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("proto-spec.md has no {heading:?}"));
    let section = &spec[start + 1..];
    let end = section[1..]
        .find("\n## ")
        .into_iter()
        .chain(section[1..].find("\n### "))
        .min()
        .map_or(section.len(), |e| e + 1);
    let mut table = BTreeMap::new();
    for line in section[..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `case` | failure | answer |" splits into 5 cells.
        let [_, case, _, answer, _] = cells[..] else {
            continue;
        };
        let Some(case) = case.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        let answer = if let Some(rest) = answer.strip_prefix('`') {
            rest.split('`').next().unwrap_or_default().to_owned()
        } else if answer.starts_with("none") {
            "none".to_owned()
        } else {
            panic!("{heading}case {case}: answer {answer:?} is neither `…` nor none")
        };
        assert!(
            table.insert(case.to_owned(), answer).is_none(),
            "{heading}lists case {case} twice"
        );
    }
    assert!(!table.is_empty(), "{heading}has no case table");
    table
}

/// Asserts that the probes (`probed`, and `not_probed` with the reason)
/// cover exactly the cases of the table under `heading`.
#[track_caller]
pub fn assert_all_probed(heading: &str, probed: &[&str], not_probed: &[&str]) {
    let mut listed: Vec<&str> = probed.iter().chain(not_probed).copied().collect();
    listed.sort_unstable();
    let before = listed.len();
    listed.dedup();
    assert_eq!(before, listed.len(), "a case is listed twice");
    let table = case_table(heading);
    let in_spec: Vec<&str> = table.keys().map(String::as_str).collect();
    assert_eq!(
        in_spec, listed,
        "{heading}and the probes list different cases"
    );
}
