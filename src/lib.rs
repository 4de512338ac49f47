//! tc-ami: builds Windows AMIs for Taskcluster workers and rolls them out to worker pools.
//!
//! Pure modules (config, base AMI choice, user data, build plan) take data and return data;
//! adapters (`ec2`, `taskcluster`) talk to the network; `commands` orchestrate and print.

pub mod ami_names;
pub mod base_ami;
pub mod build;
pub mod cleanup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod diff;
pub mod download;
pub mod duration;
pub mod ec2;
pub mod ec2_inventory;
pub mod history;
pub mod image_arg;
pub mod interrupt;
pub mod managed;
pub mod model;
pub mod password;
pub mod pins;
pub mod pool;
pub mod progress;
pub mod rollout;
pub mod taskcluster;
pub mod try_pool;
pub mod user_data;
pub mod wait;
