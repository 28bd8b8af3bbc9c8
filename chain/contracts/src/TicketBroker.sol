// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Manager} from "./Manager.sol";

/// @title TicketBroker
/// @notice Probabilistic micropayments: senders fund a deposit and a reserve (the ETH sits in
/// the Minter); recipients redeem winning tickets, paid from the deposit and, when it runs
/// short, from their share of the reserve, into their fee pool in the BondingManager.
contract TicketBroker is Manager {
    struct Ticket {
        address recipient;
        address sender;
        uint256 faceValue;
        uint256 winProb;
        uint256 senderNonce;
        bytes32 recipientRandHash;
        bytes auxData;
    }

    struct Sender {
        uint256 deposit;
        uint256 withdrawRound;
    }

    struct ReserveInfo {
        uint256 fundsRemaining;
        uint256 claimedInCurrentRound;
    }

    struct Reserve {
        uint256 funds;
        mapping(uint256 => uint256) claimedForRound;
        mapping(uint256 => mapping(address => uint256)) claimedByAddress;
    }

    uint256 public unlockPeriod;
    uint256 public ticketValidityPeriod;
    mapping(bytes32 => bool) public usedTickets;
    mapping(address => Sender) internal senders;
    mapping(address => Reserve) internal reserves;

    event DepositFunded(address indexed sender, uint256 amount);
    event ReserveFunded(address indexed reserveHolder, uint256 amount);
    event ReserveClaimed(address indexed reserveHolder, address claimant, uint256 amount);
    event WinningTicketRedeemed(
        address indexed sender,
        address indexed recipient,
        uint256 faceValue,
        uint256 winProb,
        uint256 senderNonce,
        uint256 recipientRand,
        bytes auxData
    );
    event WinningTicketTransfer(address indexed sender, address indexed recipient, uint256 amount);
    event Unlock(address indexed sender, uint256 startRound, uint256 endRound);
    event UnlockCancelled(address indexed sender);
    event Withdrawal(address indexed sender, uint256 deposit, uint256 reserve);

    constructor(address _controller) Manager(_controller) {}

    // ---- parameters -------------------------------------------------------------------

    function setUnlockPeriod(uint256 _unlockPeriod) external onlyControllerOwner {
        unlockPeriod = _unlockPeriod;
        emit ParameterUpdate("unlockPeriod");
    }

    function setTicketValidityPeriod(uint256 _ticketValidityPeriod) external onlyControllerOwner {
        require(_ticketValidityPeriod > 0, "ticketValidityPeriod must be greater than 0");
        ticketValidityPeriod = _ticketValidityPeriod;
        emit ParameterUpdate("ticketValidityPeriod");
    }

    // ---- funding ----------------------------------------------------------------------

    function fundDeposit()
        external
        payable
        whenSystemNotPaused
    {
        _processDeposit(msg.sender, msg.value);
        _toMinter(msg.value);
    }

    function fundReserve()
        external
        payable
        whenSystemNotPaused
    {
        _processReserve(msg.sender, msg.value);
        _toMinter(msg.value);
    }

    function fundDepositAndReserve(uint256 _depositAmount, uint256 _reserveAmount)
        external
        payable
    {
        fundDepositAndReserveFor(msg.sender, _depositAmount, _reserveAmount);
    }

    function fundDepositAndReserveFor(
        address _sender,
        uint256 _depositAmount,
        uint256 _reserveAmount
    )
        public
        payable
        whenSystemNotPaused
    {
        require(
            msg.value == _depositAmount + _reserveAmount,
            "msg.value does not equal sum of deposit amount and reserve amount"
        );
        _processDeposit(_sender, _depositAmount);
        _processReserve(_sender, _reserveAmount);
        _toMinter(msg.value);
    }

    // ---- redemption -------------------------------------------------------------------

    function redeemWinningTicket(
        Ticket memory _ticket,
        bytes memory _sig,
        uint256 _recipientRand
    ) public whenSystemNotPaused whenRoundInitialized {
        bytes32 ticketHash = getTicketHash(_ticket);

        require(_ticket.recipient != address(0), "ticket recipient is null address");
        require(_ticket.sender != address(0), "ticket sender is null address");

        (uint256 creationRound, bytes32 creationRoundBlockHash) = _creationRoundAndBlockHash(
            _ticket.auxData
        );
        _validateCreationRound(creationRound, creationRoundBlockHash);

        require(
            keccak256(abi.encodePacked(_recipientRand)) == _ticket.recipientRandHash,
            "recipientRand does not match recipientRandHash"
        );
        require(!usedTickets[ticketHash], "ticket is used");
        require(_isValidTicketSig(_ticket.sender, _sig, ticketHash), "invalid signature over ticket hash");
        require(
            uint256(keccak256(abi.encodePacked(_sig, _recipientRand))) < _ticket.winProb,
            "ticket did not win"
        );

        Sender storage sender = senders[_ticket.sender];
        require(_isLocked(sender), "sender is unlocked");
        Reserve storage reserve = reserves[_ticket.sender];
        require(
            sender.deposit + reserve.funds >= _ticket.faceValue,
            "sender deposit and reserve insufficient to cover ticket face value"
        );

        usedTickets[ticketHash] = true;

        uint256 amountToTransfer;
        if (_ticket.faceValue > sender.deposit) {
            amountToTransfer =
                sender.deposit +
                _claimFromReserve(_ticket.sender, _ticket.recipient, _ticket.faceValue - sender.deposit);
            sender.deposit = 0;
        } else {
            amountToTransfer = _ticket.faceValue;
            sender.deposit -= _ticket.faceValue;
        }

        if (amountToTransfer > 0) {
            bondingManager().updateTranscoderWithFees(
                _ticket.recipient,
                amountToTransfer,
                creationRound
            );
            emit WinningTicketTransfer(_ticket.sender, _ticket.recipient, amountToTransfer);
        }

        emit WinningTicketRedeemed(
            _ticket.sender,
            _ticket.recipient,
            _ticket.faceValue,
            _ticket.winProb,
            _ticket.senderNonce,
            _recipientRand,
            _ticket.auxData
        );
    }

    /// @notice Redeem each ticket in its own sub-call; a ticket that fails is skipped (and
    /// stays unused). Read WinningTicketRedeemed logs or usedTickets for the outcome.
    function batchRedeemWinningTickets(
        Ticket[] memory _tickets,
        bytes[] memory _sigs,
        uint256[] memory _recipientRands
    ) external whenSystemNotPaused whenRoundInitialized {
        for (uint256 i = 0; i < _tickets.length; i++) {
            // Failures are deliberately ignored: all-or-nothing per ticket.
            (bool ok, ) = address(this).call(
                abi.encodeWithSelector(
                    this.redeemWinningTicket.selector,
                    _tickets[i],
                    _sigs[i],
                    _recipientRands[i]
                )
            );
            ok;
        }
    }

    // ---- unlock / withdraw ------------------------------------------------------------

    function unlock() external whenSystemNotPaused {
        Sender storage sender = senders[msg.sender];
        require(sender.deposit > 0 || reserves[msg.sender].funds > 0, "sender deposit and reserve are zero");
        require(!_isUnlockInProgress(msg.sender), "unlock already initiated");
        uint256 round = roundsManager().currentRound();
        sender.withdrawRound = round + unlockPeriod;
        emit Unlock(msg.sender, round, sender.withdrawRound);
    }

    function cancelUnlock() external whenSystemNotPaused {
        require(_isUnlockInProgress(msg.sender), "no unlock request in progress");
        _cancelUnlock(msg.sender);
    }

    function withdraw() external whenSystemNotPaused {
        Sender storage sender = senders[msg.sender];
        uint256 deposit = sender.deposit;
        uint256 reserve = reserves[msg.sender].funds;
        require(deposit > 0 || reserve > 0, "sender deposit and reserve are zero");
        require(_isUnlockInProgress(msg.sender), "no unlock request in progress");
        require(!_isLocked(sender), "account is locked");

        sender.deposit = 0;
        sender.withdrawRound = 0;
        reserves[msg.sender].funds = 0;

        minter().trustedWithdrawETH(payable(msg.sender), deposit + reserve);
        emit Withdrawal(msg.sender, deposit, reserve);
    }

    // ---- views ------------------------------------------------------------------------

    function isUnlockInProgress(address _sender) external view returns (bool) {
        return _isUnlockInProgress(_sender);
    }

    function getSenderInfo(address _sender)
        external
        view
        returns (Sender memory sender, ReserveInfo memory reserve)
    {
        sender = senders[_sender];
        reserve = getReserveInfo(_sender);
    }

    function getReserveInfo(address _reserveHolder) public view returns (ReserveInfo memory info) {
        Reserve storage reserve = reserves[_reserveHolder];
        info.fundsRemaining = reserve.funds;
        info.claimedInCurrentRound = reserve.claimedForRound[roundsManager().currentRound()];
    }

    /// @notice What a claimant can still draw from a reserve this round: an equal share per
    /// transcoder in the live pool, less what it already drew.
    function claimableReserve(address _reserveHolder, address _claimant)
        public
        view
        returns (uint256)
    {
        if (!bondingManager().isActiveTranscoder(_claimant)) {
            return 0;
        }
        uint256 poolSize = bondingManager().getTranscoderPoolSize();
        if (poolSize == 0) {
            return 0;
        }
        Reserve storage reserve = reserves[_reserveHolder];
        uint256 round = roundsManager().currentRound();
        uint256 allocation = (reserve.funds + reserve.claimedForRound[round]) / poolSize;
        uint256 claimed = reserve.claimedByAddress[round][_claimant];
        return allocation > claimed ? allocation - claimed : 0;
    }

    function claimedReserve(address _reserveHolder, address _claimant)
        external
        view
        returns (uint256)
    {
        return reserves[_reserveHolder].claimedByAddress[roundsManager().currentRound()][_claimant];
    }

    function getTicketHash(Ticket memory _ticket) public pure returns (bytes32) {
        return
            keccak256(
                abi.encodePacked(
                    _ticket.recipient,
                    _ticket.sender,
                    _ticket.faceValue,
                    _ticket.winProb,
                    _ticket.senderNonce,
                    _ticket.recipientRandHash,
                    _ticket.auxData
                )
            );
    }

    // ---- internals --------------------------------------------------------------------

    function _processDeposit(address _sender, uint256 _amount) private {
        senders[_sender].deposit += _amount;
        if (_sender == msg.sender && _isUnlockInProgress(_sender)) {
            _cancelUnlock(_sender);
        }
        emit DepositFunded(_sender, _amount);
    }

    function _processReserve(address _sender, uint256 _amount) private {
        reserves[_sender].funds += _amount;
        if (_sender == msg.sender && _isUnlockInProgress(_sender)) {
            _cancelUnlock(_sender);
        }
        emit ReserveFunded(_sender, _amount);
    }

    function _toMinter(uint256 _amount) private {
        if (_amount > 0) {
            minter().depositETH{value: _amount}();
        }
    }

    function _isUnlockInProgress(address _sender) private view returns (bool) {
        return senders[_sender].withdrawRound > 0;
    }

    function _isLocked(Sender storage _sender) private view returns (bool) {
        return _sender.withdrawRound == 0 || roundsManager().currentRound() < _sender.withdrawRound;
    }

    function _cancelUnlock(address _sender) private {
        senders[_sender].withdrawRound = 0;
        emit UnlockCancelled(_sender);
    }

    function _claimFromReserve(address _reserveHolder, address _claimant, uint256 _amount)
        private
        returns (uint256)
    {
        uint256 claimable = claimableReserve(_reserveHolder, _claimant);
        uint256 claimAmount = _amount > claimable ? claimable : _amount;
        if (claimAmount == 0) {
            return 0;
        }
        Reserve storage reserve = reserves[_reserveHolder];
        uint256 round = roundsManager().currentRound();
        reserve.funds -= claimAmount;
        reserve.claimedForRound[round] += claimAmount;
        reserve.claimedByAddress[round][_claimant] += claimAmount;
        emit ReserveClaimed(_reserveHolder, _claimant, claimAmount);
        return claimAmount;
    }

    function _creationRoundAndBlockHash(bytes memory _auxData)
        private
        pure
        returns (uint256 creationRound, bytes32 creationRoundBlockHash)
    {
        require(_auxData.length == 64, "invalid length for ticket auxData: must be 64 bytes");
        assembly {
            creationRound := mload(add(_auxData, 32))
            creationRoundBlockHash := mload(add(_auxData, 64))
        }
    }

    function _validateCreationRound(uint256 _creationRound, bytes32 _creationRoundBlockHash)
        private
        view
    {
        bytes32 blockHash = roundsManager().blockHashForRound(_creationRound);
        require(blockHash != bytes32(0), "ticket creationRound does not have a block hash");
        require(
            _creationRoundBlockHash == blockHash,
            "ticket creationRoundBlockHash invalid for creationRound"
        );
        require(
            _creationRound + ticketValidityPeriod > roundsManager().currentRound(),
            "ticket is expired"
        );
    }

    /// @dev eth_sign recovery (v 27/28, low s), as OpenZeppelin's ECDSA does.
    function _isValidTicketSig(address _sender, bytes memory _sig, bytes32 _ticketHash)
        private
        pure
        returns (bool)
    {
        require(_sig.length == 65, "INVALID_SIGNATURE_LENGTH");
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(_sig, 32))
            s := mload(add(_sig, 64))
            v := byte(0, mload(add(_sig, 96)))
        }
        if (uint256(s) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) {
            return false;
        }
        if (v != 27 && v != 28) {
            return false;
        }
        bytes32 digest = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", _ticketHash));
        address signer = ecrecover(digest, v, r, s);
        return signer != address(0) && signer == _sender;
    }
}
