//! `spp-smtpd check`: every problem reported as file:line, exit 1.
