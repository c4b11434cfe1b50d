//! placeholder
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/nps.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/nps.v1.serde.rs"));
}
