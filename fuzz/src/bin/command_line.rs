//! Fuzz target: see `spp_smtpd_fuzz::command_line`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::command_line(data);
    });
}
