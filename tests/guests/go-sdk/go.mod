module rustygate.dev/tests/go-sdk-probe

go 1.24

require rustygate.dev/sdk/go v0.0.0

replace rustygate.dev/sdk/go => ../../../sdk/go
