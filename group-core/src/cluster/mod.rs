//! Cluster building blocks (sans-IO): the messages nodes exchange, and the relay tree that spreads a
//! broadcast across the nodes holding a group's members. The node logic that uses them lives with
//! [`crate::Node`].

pub mod mesh;
pub mod relay;
