//! Tests of the route table and the document rendered from it. That the router answers exactly
//! the documented routes is checked against a running service in `tests/api/routes.rs`.

use std::collections::BTreeSet;

use super::*;

#[test]
fn every_ref_resolves_to_a_component() {
    let document = document("/job-manager");
    let text = document.to_string();
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().expect("name");
        assert!(schemas.contains_key(name), "unresolved $ref to {name}");
    }
    assert!(!text.contains("#/$defs/"), "a $ref escaped to $defs");
}

#[test]
fn every_protected_operation_answers_errors_as_json_and_every_open_one_says_so() {
    let document = document("/job-manager");
    let mut open = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            if method == "parameters" {
                continue;
            }
            if operation.get("security") == Some(&serde_json::json!([])) {
                open.insert(path.as_str());
                continue;
            }
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.contains_key("503"), "{method} {path}");
            assert!(
                responses.keys().any(|code| code.starts_with('4')),
                "{method} {path}"
            );
            let error = &responses["401"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(error, "#/components/schemas/ErrorBody", "{method} {path}");
        }
    }
    let expected = [
        "/dashboard",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
    ];
    assert_eq!(
        open,
        BTreeSet::from(expected),
        "the routes without access control"
    );
}

#[test]
fn the_document_has_every_route_of_the_table_once_with_unique_operation_ids() {
    let table = table();
    let document = document("/job-manager");
    let paths = document["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), table.len(), "{:?}", paths.keys());
    let (_, documented) = routes::assemble(table, Tokens::default());
    let mut ids = BTreeSet::new();
    for (path, item) in &documented {
        let rendered = paths.get(*path).unwrap_or_else(|| panic!("{path} missing"));
        for (method, operation) in item.operations() {
            assert_eq!(rendered[*method]["operationId"], operation.id(), "{path}");
            assert!(ids.insert(operation.id()), "{} used twice", operation.id());
        }
    }
    assert_eq!(ids.len(), 20, "{ids:?}");
}

#[test]
fn every_path_parameter_is_documented_and_every_documented_one_is_in_the_path() {
    let (_, documented) = routes::assemble(table(), Tokens::default());
    for (path, item) in &documented {
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let declared: BTreeSet<&str> = item.params().iter().map(|p| p.name()).collect();
        assert_eq!(in_path, declared, "{path}");
    }
}

#[test]
fn the_server_url_is_the_base_path() {
    assert_eq!(document("/x/y")["servers"][0]["url"], "/x/y");
    assert_eq!(document("/")["servers"][0]["url"], "/");
}
