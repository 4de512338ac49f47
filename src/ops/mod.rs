//! The lifecycle layer (cargo keeps its `ops` under thin `commands` the same way): creating,
//! waiting on, tagging and removing what tc-ami makes — instances, images with their
//! snapshots, copies, key pairs, security groups — each written once, for every command.
//!
//! Every create registers its removal in a [`teardown::Teardown`] before it is sent (a sweep by
//! name or tag) and replaces it with the removal by id once the answer arrives; commands run
//! what is registered, in reverse, whatever ends their work.

pub mod access;
pub mod aws_credentials;
pub mod build;
pub mod cleanup;
pub mod debug;
pub mod deployments;
pub mod images;
pub mod instances;
pub mod teardown;
