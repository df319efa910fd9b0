build-fp/chain/qcow2_create.o: chain/qcow2_create.c chain/qcow2_create.h \
 chain/layer_io.h
chain/qcow2_create.h:
chain/layer_io.h:
