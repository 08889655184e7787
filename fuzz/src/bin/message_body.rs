//! Fuzz target: see `spp_smtpd_fuzz::message_body`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::message_body(data);
    });
}
