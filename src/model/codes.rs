//! The EC2 error codes tc-ami acts on, in one table.

/// An EC2 error code whose answer changes what tc-ami does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    AmiNotFound,
    AmiUnavailable,
    AmiMalformed,
    InstanceNotFound,
    GroupNotFound,
    /// A security group still attached to an instance that is terminating.
    DependencyViolation,
    SnapshotNotFound,
    /// A snapshot whose image's deregistration has not reached it yet.
    SnapshotInUse,
    /// The name is taken: for a build's own names, by its own create call whose answer was
    /// lost (the SDK's retry then finds the name in use).
    AmiNameDuplicate,
    KeyPairDuplicate,
    GroupDuplicate,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AmiNotFound => "InvalidAMIID.NotFound",
            ErrorCode::AmiUnavailable => "InvalidAMIID.Unavailable",
            ErrorCode::AmiMalformed => "InvalidAMIID.Malformed",
            ErrorCode::InstanceNotFound => "InvalidInstanceID.NotFound",
            ErrorCode::GroupNotFound => "InvalidGroup.NotFound",
            ErrorCode::DependencyViolation => "DependencyViolation",
            ErrorCode::SnapshotNotFound => "InvalidSnapshot.NotFound",
            ErrorCode::SnapshotInUse => "InvalidSnapshot.InUse",
            ErrorCode::AmiNameDuplicate => "InvalidAMIName.Duplicate",
            ErrorCode::KeyPairDuplicate => "InvalidKeyPair.Duplicate",
            ErrorCode::GroupDuplicate => "InvalidGroup.Duplicate",
        }
    }
}

/// The image is gone (deregistered) or going: removing it again is done.
pub const IMAGE_GONE: &[ErrorCode] = &[ErrorCode::AmiNotFound, ErrorCode::AmiUnavailable];
/// No such image in that region (or no such id at all).
pub const NO_SUCH_IMAGE: &[ErrorCode] = &[ErrorCode::AmiNotFound, ErrorCode::AmiMalformed];
/// The image cannot be used: gone, going, or never was.
pub const IMAGE_UNUSABLE: &[ErrorCode] = &[
    ErrorCode::AmiNotFound,
    ErrorCode::AmiUnavailable,
    ErrorCode::AmiMalformed,
];
