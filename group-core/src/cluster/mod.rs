//! Cluster building blocks (sans-IO). So far: the relay tree that spreads a broadcast across the nodes
//! holding a group's members. Mesh messages, remote joins and failover build on it.

pub mod relay;
