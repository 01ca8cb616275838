//! Volume capabilities: weir serves filesystem (mount) access in every
//! access mode, and no block access. Shared by the node (publish) and the
//! controller (create, validate).

use weir_csi_proto::v1::VolumeCapability;
use weir_csi_proto::v1::volume_capability::access_mode::Mode;
use weir_csi_proto::v1::volume_capability::{AccessType, MountVolume};

use crate::error::CsiError;
use crate::publisher;

/// Filesystem types a volume may name: none, or weir's own.
const FS_TYPES: [&str; 3] = ["", "fuse", "fuse.weir"];

/// A capability weir can serve, as the publisher needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The mode or a mount flag asks for read-only.
    pub read_only: bool,
    /// Further `MOUNT_ATTR_*` flags from `mount_flags`.
    pub attrs: u64,
}

/// Checks one capability and says how to serve it.
pub fn check(cap: &VolumeCapability) -> Result<Access, CsiError> {
    let mount = match &cap.access_type {
        Some(AccessType::Mount(m)) => m,
        Some(AccessType::Block(_)) => {
            return Err(CsiError::Invalid(
                "block volumes are not supported: weir is a filesystem".into(),
            ));
        }
        None => {
            return Err(CsiError::Invalid(
                "volume_capability.access_type (mount) is required".into(),
            ));
        }
    };
    let mode = access_mode(cap)?;
    let (flag_ro, attrs) = mount_flags(mount)?;
    let read_only =
        flag_ro || matches!(mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly);
    Ok(Access { read_only, attrs })
}

fn access_mode(cap: &VolumeCapability) -> Result<Mode, CsiError> {
    let raw = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| CsiError::Invalid("volume_capability.access_mode is required".into()))?
        .mode;
    match Mode::try_from(raw) {
        Ok(Mode::Unknown) | Err(_) => Err(CsiError::Invalid(format!(
            "volume_capability.access_mode {raw} is not a known mode"
        ))),
        Ok(m) => Ok(m),
    }
}

fn mount_flags(m: &MountVolume) -> Result<(bool, u64), CsiError> {
    if !FS_TYPES.contains(&m.fs_type.as_str()) {
        return Err(CsiError::Invalid(format!(
            "fs_type {:?} is not supported; leave it empty (weir mounts fuse.weir)",
            m.fs_type
        )));
    }
    if !m.volume_mount_group.is_empty() {
        return Err(CsiError::Invalid(
            "volume_mount_group is not supported".into(),
        ));
    }
    publisher::parse_flags(&m.mount_flags)
        .map_err(|f| CsiError::Invalid(format!("mount flag {f:?} is not supported")))
}

/// Checks a list of capabilities, which must not be empty.
pub fn check_all(caps: &[VolumeCapability]) -> Result<(), CsiError> {
    if caps.is_empty() {
        return Err(CsiError::Invalid("volume_capabilities is required".into()));
    }
    caps.iter().try_for_each(|c| check(c).map(|_| ()))
}
