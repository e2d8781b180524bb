module rustygate.dev/examples/api-key

go 1.24

require rustygate.dev/sdk/go v0.0.0

// The SDK comes from this repository; nothing is downloaded.
replace rustygate.dev/sdk/go => ../../../sdk/go
