module rustygate.dev/sdk/go

go 1.24
