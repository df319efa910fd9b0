build-fp/chain/qcow2_format.o: chain/qcow2_format.c chain/qcow2_format.h
chain/qcow2_format.h:
