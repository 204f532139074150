package main

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// grpc is google.golang.org/grpc unary calls with insecure credentials and
// default settings, a hand-written service descriptor (no protoc) and a
// hand-written codec using the trivial binary layout of system.go.
type grpcSystem struct{}

// binCodec is registered under its name and chosen by the client as the
// content-subtype; the server looks it up by that name.
type binCodec struct{}

const binCodecName = "benchbin"

func init() { encoding.RegisterCodec(binCodec{}) }

func (binCodec) Name() string { return binCodecName }

func (binCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(*Msg)
	if !ok {
		return nil, fmt.Errorf("benchbin: cannot marshal %T", v)
	}
	return appendMsg(make([]byte, 0, seqSize+len(m.Data)), m), nil
}

// Unmarshal copies: gRPC reuses data's buffer once Unmarshal returns.
func (binCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*Msg)
	if !ok {
		return fmt.Errorf("benchbin: cannot unmarshal into %T", v)
	}
	return parseMsg(data, m)
}

// echoServer is the service's interface (the descriptor's HandlerType).
type echoServer interface {
	Echo(ctx context.Context, req *Msg) (*Msg, error)
}

type echoImpl struct{}

func (echoImpl) Echo(_ context.Context, req *Msg) (*Msg, error) { return req, nil }

const grpcEchoMethod = "/bench.Echo/Echo"

var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			req := new(Msg)
			if err := dec(req); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(echoServer).Echo(ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: grpcEchoMethod}
			return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
				return srv.(echoServer).Echo(ctx, req.(*Msg))
			})
		},
	}},
	Metadata: "bench",
}

func (grpcSystem) name() string { return "grpc" }

func (grpcSystem) start() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := grpc.NewServer()
	srv.RegisterService(&echoServiceDesc, echoImpl{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	stop := func() {
		srv.Stop()
		<-done
	}
	return ln.Addr().String(), stop, nil
}

type grpcClient struct{ cc *grpc.ClientConn }

func (grpcSystem) dial(ctx context.Context, addr string) (client, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(binCodecName)))
	if err != nil {
		return nil, err
	}
	cc.Connect()
	return grpcClient{cc}, nil
}

func (c grpcClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	reply := new(Msg)
	if err := c.cc.Invoke(ctx, grpcEchoMethod, req, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

func (c grpcClient) close() error { return c.cc.Close() }
