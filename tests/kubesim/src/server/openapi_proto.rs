//! `/openapi/v2` in protocol buffers (gnostic `openapi.v2.Document`), the only form kubectl
//! up to 1.27 accepts: it reads the PATCH operations' `x-kubernetes-group-version-kind` and
//! `fieldValidation` parameter to decide whether the server validates fields. The document
//! carries paths and those operations; definitions are left out (kubectl falls back to its
//! compiled-in types where it would use them).

use crate::catalog::Catalog;
use crate::version::KubeVersion;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (strings and embedded messages).
fn bytes_field(out: &mut Vec<u8>, number: u32, data: &[u8]) {
    varint(out, u64::from(number << 3 | 2));
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn string_field(out: &mut Vec<u8>, number: u32, s: &str) {
    bytes_field(out, number, s.as_bytes());
}

fn bool_field(out: &mut Vec<u8>, number: u32, b: bool) {
    if b {
        varint(out, u64::from(number << 3));
        varint(out, 1);
    }
}

/// `ParametersItem{parameter: Parameter{non_body_parameter: NonBodyParameter{
/// query_parameter_sub_schema: {in: query, name, type, unique_items}}}}`.
fn query_parameter(name: &str, type_: &str) -> Vec<u8> {
    let mut q = Vec::new();
    string_field(&mut q, 2, "query");
    string_field(&mut q, 4, name);
    string_field(&mut q, 6, type_);
    bool_field(&mut q, 20, true);
    let mut non_body = Vec::new();
    bytes_field(&mut non_body, 3, &q);
    let mut parameter = Vec::new();
    bytes_field(&mut parameter, 2, &non_body);
    let mut item = Vec::new();
    bytes_field(&mut item, 1, &parameter);
    item
}

/// `NamedAny{name, value: Any{yaml}}`.
fn vendor_extension(name: &str, yaml: &str) -> Vec<u8> {
    let mut any = Vec::new();
    string_field(&mut any, 2, yaml);
    let mut named = Vec::new();
    string_field(&mut named, 1, name);
    bytes_field(&mut named, 2, &any);
    named
}

fn operation(id: &str, action: &str, gvk_yaml: &str) -> Vec<u8> {
    let mut op = Vec::new();
    string_field(&mut op, 5, id);
    for (name, type_) in [
        ("dryRun", "string"),
        ("fieldManager", "string"),
        ("fieldValidation", "string"),
        ("force", "boolean"),
    ] {
        bytes_field(&mut op, 8, &query_parameter(name, type_));
    }
    bytes_field(
        &mut op,
        13,
        &vendor_extension("x-kubernetes-action", action),
    );
    bytes_field(
        &mut op,
        13,
        &vendor_extension("x-kubernetes-group-version-kind", gvk_yaml),
    );
    op
}

/// The protobuf `/openapi/v2` document.
pub fn document(catalog: &Catalog, version: &KubeVersion) -> Vec<u8> {
    let mut paths = Vec::new();
    for rt in catalog.all() {
        for v in &rt.versions {
            let base = if rt.group.is_empty() {
                format!("/api/{}", v.name)
            } else {
                format!("/apis/{}/{}", rt.group, v.name)
            };
            let path = if rt.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
            } else {
                format!("{base}/{}/{{name}}", rt.plural)
            };
            let gvk = format!(
                "group: \"{}\"\nkind: {}\nversion: {}\n",
                rt.group, rt.kind, v.name
            );
            let mut item = Vec::new();
            bytes_field(
                &mut item,
                2,
                &operation(&format!("read{}", rt.kind), "get", &gvk),
            );
            bytes_field(
                &mut item,
                3,
                &operation(&format!("replace{}", rt.kind), "put", &gvk),
            );
            bytes_field(
                &mut item,
                5,
                &operation(&format!("delete{}", rt.kind), "delete", &gvk),
            );
            bytes_field(
                &mut item,
                8,
                &operation(&format!("patch{}", rt.kind), "patch", &gvk),
            );
            let mut named = Vec::new();
            string_field(&mut named, 1, &path);
            bytes_field(&mut named, 2, &item);
            bytes_field(&mut paths, 2, &named);
        }
    }
    let mut info = Vec::new();
    string_field(&mut info, 1, "Kubernetes");
    string_field(&mut info, 2, &version.to_string());
    let mut doc = Vec::new();
    string_field(&mut doc, 1, "2.0");
    bytes_field(&mut doc, 2, &info);
    bytes_field(&mut doc, 8, &paths);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_varints_and_fields() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let mut f = Vec::new();
        string_field(&mut f, 1, "2.0");
        assert_eq!(f, [0x0a, 3, b'2', b'.', b'0']);
        let doc = document(
            &Catalog::builtin(&KubeVersion::DEFAULT),
            &KubeVersion::DEFAULT,
        );
        assert!(doc.starts_with(&[0x0a, 3, b'2', b'.', b'0']));
        let text = String::from_utf8_lossy(&doc);
        assert!(text.contains("/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"));
        assert!(text.contains("kind: DaemonSet"));
        assert!(text.contains("fieldValidation"));
    }
}
