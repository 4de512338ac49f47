//! The tag vocabulary: every tag tc-ami puts on what it creates, and reads back to find it.

/// The build that made it: `20261124T214001Z-3f9a2c`. With [`WORKER_TYPE`], what marks a
/// resource as tc-ami's.
pub const BUILD_ID: &str = "tc-ami:build-id";
pub const WORKER_TYPE: &str = "tc-ami:worker-type";
/// A debug instance (`tc-ami debug-instance`), its key pair and its security group: the launch
/// that made them, `20261130T050000Z-3f9a2c`. Never with [`BUILD_ID`] (the sandbox, like the
/// build, treats an instance with a build id as a build). With [`WORKER_TYPE`] and
/// [`EXPIRES_AT`] (launch + TTL), what `cleanup` removes once that time has passed.
pub const DEBUG_ID: &str = "tc-ami:debug-id";
/// When the build started (RFC 3339): the age of resources EC2 gives no creation time.
pub const CREATED_AT: &str = "tc-ami:created-at";
/// When the build that made it can no longer be running (RFC 3339 UTC): written at creation on
/// the key pair, group, instance, volume, image, snapshots and copies as the build's start +
/// `build_timeout` + 2 × `image_timeout`, and, by `--keep-on-failure`, now + its TTL on a failed
/// build's instance, group and key pair. `cleanup` keeps what carries a time still to come, whatever its
/// own config says.
pub const EXPIRES_AT: &str = "tc-ami:expires-at";
pub const BASE_IMAGE_ID: &str = "tc-ami:base-image-id";
pub const BASE_IMAGE_NAME: &str = "tc-ami:base-image-name";
pub const USER_DATA_SHA256: &str = "tc-ami:user-data-sha256";
pub const VERSION: &str = "tc-ami:version";
pub const SOURCE_REGION: &str = "tc-ami:source-region";
/// On a copy: the image it was copied from.
pub const SOURCE_IMAGE_ID: &str = "tc-ami:source-image-id";
/// EC2's own name tag.
pub const NAME: &str = "Name";
