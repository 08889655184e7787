//! Fuzz target: see `spp_smtpd_fuzz::envelope_address`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::envelope_address(data);
    });
}
