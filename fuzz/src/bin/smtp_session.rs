//! Fuzz target: see `spp_smtpd_fuzz::smtp_session`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::smtp_session(data);
    });
}
