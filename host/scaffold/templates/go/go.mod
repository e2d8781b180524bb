module __NAME__

go 1.24

require rustygate.dev/sdk/go v0.0.0

// RustyGate's Go SDK is written into third_party/ by `rustygate new-filter`: nothing is
// downloaded, and the standard library is the only other dependency.
replace rustygate.dev/sdk/go => ./third_party/rustygate-sdk-go
