//! Fuzz target: see `spp_smtpd_fuzz::settings_file`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::settings_file(data);
    });
}
