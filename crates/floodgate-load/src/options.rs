//! What a run is given: the scenarios it loads and the values its requests
//! are made from. The command line builds these; everything else reads them.

use http::Method;

/// Smallest and largest `number` the floodgate compute endpoints accept.
pub const NUMBER_MIN: u64 = 0;
pub const NUMBER_MAX: u64 = 1_000_000;

/// Inclusive range of body numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberRange {
    pub lo: u64,
    pub hi: u64,
}

/// One scenario to run, resolved from the options.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub method: Method,
    pub path: String,
    /// Requests, or jobs in the jobs scenario.
    pub requests: u64,
    /// The jobs scenario: each request submits a job that is then followed.
    pub jobs: bool,
}

/// Parses `LO..=HI` or `LO-HI` (both inclusive) within 0..=1000000.
pub fn parse_number_range(s: &str) -> Result<NumberRange, String> {
    let (lo, hi) = s
        .split_once("..=")
        .or_else(|| s.split_once('-'))
        .ok_or_else(|| format!("`{s}` is not a range; use LO..=HI or LO-HI"))?;
    let num = |v: &str| {
        v.trim()
            .replace('_', "")
            .parse::<u64>()
            .map_err(|_| format!("`{}` is not a non-negative integer", v.trim()))
    };
    let (lo, hi) = (num(lo)?, num(hi)?);
    if lo > hi {
        return Err(format!("empty range: {lo} > {hi}"));
    }
    if hi > NUMBER_MAX {
        return Err(format!(
            "the server only accepts numbers in {NUMBER_MIN}..={NUMBER_MAX}; use --body to send other payloads"
        ));
    }
    Ok(NumberRange { lo, hi })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_range_forms_and_limits() {
        assert_eq!(
            parse_number_range("1..=10"),
            Ok(NumberRange { lo: 1, hi: 10 })
        );
        assert_eq!(parse_number_range("5-5"), Ok(NumberRange { lo: 5, hi: 5 }));
        assert_eq!(
            parse_number_range("0..=1_000_000"),
            Ok(NumberRange {
                lo: 0,
                hi: 1_000_000
            })
        );
        assert!(parse_number_range("10..=1").is_err());
        assert!(parse_number_range("0..=1000001").is_err());
        assert!(parse_number_range("-1..=5").is_err());
        assert!(parse_number_range("7").is_err());
    }
}
