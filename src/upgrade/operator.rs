//! The Tigera operator a hop deploys.
//!
//! Upstream's `tigera-operator.yaml` of a Calico release pins the operator the release was cut
//! with; later operator patches embed the same Calico release and fix the operator itself. A hop
//! deploys the catalog's operator for the release ([`crate::catalog::Release::operator`]: the
//! newest patch that embeds it), so the image tag of the operator Deployment is set to it.

use serde::Serialize;
use serde_json::Value;

use crate::cluster::detect::OPERATOR_NAMESPACE;
use crate::cluster::objects;
use crate::version::Version;

/// The operator's Deployment and container in `tigera-operator.yaml`.
const OPERATOR_NAME: &str = "tigera-operator";

/// The operator image a hop moved from the release's pin to the catalog's operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorPin {
    /// The image the manifest pins.
    pub from: String,
    /// The image the hop deploys.
    pub to: String,
}

/// Sets the tag of the operator image in the `tigera-operator` Deployment of `objects` to
/// `operator`, keeping the registry and path; `None` when it already is, or when the manifest
/// has no such Deployment or pins the image by digest (a digest is a deliberate choice).
pub fn pin(objects: &mut [Value], operator: &Version) -> Option<OperatorPin> {
    let deployment = objects.iter_mut().find(|o| {
        o["kind"] == "Deployment"
            && objects::name(o) == OPERATOR_NAME
            && objects::namespace(o) == Some(OPERATOR_NAMESPACE)
    })?;
    let containers = deployment
        .pointer_mut("/spec/template/spec/containers")?
        .as_array_mut()?;
    let container = containers.iter_mut().find(|c| c["name"] == OPERATOR_NAME)?;
    let image = container.get_mut("image")?;
    let from = image.as_str()?.to_string();
    let to = with_tag(&from, &operator.to_string())?;
    if to == from {
        return None;
    }
    *image = Value::String(to.clone());
    Some(OperatorPin { from, to })
}

/// `image` with its tag replaced (or added); `None` for digest references.
fn with_tag(image: &str, tag: &str) -> Option<String> {
    if image.contains('@') {
        return None;
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    let repository = match image[name_start..].rfind(':') {
        Some(i) => &image[..name_start + i],
        None => image,
    };
    Some(format!("{repository}:{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(image: &str) -> Vec<Value> {
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tigera-operator"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "tigera-operator", "namespace": "tigera-operator"},
                "spec": {"template": {"spec": {"containers": [{"name": "tigera-operator", "image": image}]}}}}),
        ]
    }

    #[test]
    fn the_operator_tag_moves_to_the_catalogs_patch() {
        let mut objs = manifest("quay.io/tigera/operator:v1.38.13");
        let pinned = pin(&mut objs, &"v1.38.16".parse().unwrap()).unwrap();
        assert_eq!(pinned.from, "quay.io/tigera/operator:v1.38.13");
        assert_eq!(pinned.to, "quay.io/tigera/operator:v1.38.16");
        assert_eq!(
            objs[1]["spec"]["template"]["spec"]["containers"][0]["image"],
            "quay.io/tigera/operator:v1.38.16"
        );
        // Once there, nothing moves.
        assert_eq!(pin(&mut objs, &"v1.38.16".parse().unwrap()), None);
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let mut objs = manifest("registry.local:5000/mirror/tigera/operator:v1.34.13");
        let pinned = pin(&mut objs, &"v1.34.14".parse().unwrap()).unwrap();
        assert_eq!(
            pinned.to,
            "registry.local:5000/mirror/tigera/operator:v1.34.14"
        );
        let mut objs = manifest("registry.local:5000/tigera/operator");
        assert_eq!(
            pin(&mut objs, &"v1.34.14".parse().unwrap()).unwrap().to,
            "registry.local:5000/tigera/operator:v1.34.14"
        );
        let mut objs = manifest("quay.io/tigera/operator@sha256:abcd");
        assert_eq!(pin(&mut objs, &"v1.34.14".parse().unwrap()), None);
    }
}
