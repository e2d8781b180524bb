module rustygate.dev/tests/go-probe

go 1.24
