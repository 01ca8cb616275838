//! The volume context of NodePublishVolume: weir's own keys (`mountPath`,
//! `createDirectory`) and the ones kubelet adds (`csi.storage.k8s.io/...`:
//! ephemeral, pod info). Unknown keys are refused: a misspelt `mountPath`
//! must not silently publish the whole namespace.

use std::collections::HashMap;

use crate::error::CsiError;
use crate::paths;
use crate::state::Pod;

/// The namespace directory a volume binds.
pub const MOUNT_PATH: &str = "mountPath";
/// `"true"`: create `mountPath` on first use.
pub const CREATE_DIRECTORY: &str = "createDirectory";
const K8S_PREFIX: &str = "csi.storage.k8s.io/";
const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";

/// The parsed context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Normalised `mountPath` (default `/`).
    pub mount_path: String,
    /// `createDirectory`.
    pub create_directory: bool,
    /// Whether kubelet marked it an ephemeral inline volume.
    pub ephemeral: bool,
    /// The pod, when kubelet passed all three pod-info keys.
    pub pod: Option<Pod>,
}

fn boolean(ctx: &HashMap<String, String>, key: &str) -> Result<bool, CsiError> {
    match ctx.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(CsiError::Invalid(format!(
            "volume attribute {key} must be \"true\" or \"false\", not {v:?}"
        ))),
    }
}

/// Parses and checks the context.
pub fn parse(ctx: &HashMap<String, String>) -> Result<Context, CsiError> {
    if let Some(k) = ctx
        .keys()
        .find(|k| !k.starts_with(K8S_PREFIX) && *k != MOUNT_PATH && *k != CREATE_DIRECTORY)
    {
        return Err(CsiError::Invalid(format!(
            "unknown volume attribute {k:?}; weir takes {MOUNT_PATH} and {CREATE_DIRECTORY}"
        )));
    }
    let raw = ctx.get(MOUNT_PATH).map(String::as_str).unwrap_or("/");
    let mount_path =
        paths::mount_path(raw).map_err(|e| CsiError::Invalid(format!("{MOUNT_PATH}: {e}")))?;
    let pod = match (ctx.get(POD_NAME), ctx.get(POD_NAMESPACE), ctx.get(POD_UID)) {
        (Some(name), Some(namespace), Some(uid)) => Some(Pod {
            name: name.clone(),
            namespace: namespace.clone(),
            uid: uid.clone(),
        }),
        _ => None,
    };
    Ok(Context {
        mount_path,
        create_directory: boolean(ctx, CREATE_DIRECTORY)?,
        ephemeral: boolean(ctx, EPHEMERAL)?,
        pod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_kubelet_keys() {
        let c = parse(&ctx(&[])).unwrap();
        assert_eq!(
            (c.mount_path.as_str(), c.create_directory, c.ephemeral),
            ("/", false, false)
        );
        let c = parse(&ctx(&[
            ("mountPath", "team-a/x"),
            ("createDirectory", "true"),
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("csi.storage.k8s.io/pod.name", "p"),
            ("csi.storage.k8s.io/pod.namespace", "ns"),
            ("csi.storage.k8s.io/pod.uid", "u"),
            ("csi.storage.k8s.io/serviceAccount.name", "default"),
        ]))
        .unwrap();
        assert_eq!(c.mount_path, "/team-a/x");
        assert!(c.create_directory && c.ephemeral);
        assert_eq!(c.pod.unwrap().uid, "u");
    }

    #[test]
    fn bad_keys_and_values_are_refused() {
        for bad in [
            ctx(&[("mountpath", "/a")]),
            ctx(&[("mountPath", "/a/../b")]),
            ctx(&[("createDirectory", "yes")]),
            ctx(&[("csi.storage.k8s.io/ephemeral", "1")]),
        ] {
            assert!(matches!(parse(&bad), Err(CsiError::Invalid(_))), "{bad:?}");
        }
    }
}
